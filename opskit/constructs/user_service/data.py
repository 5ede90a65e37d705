"""The user service's state: the users table, the audit table and the page-token secret.

The users table is the data model of `opskit/functions/user_service/users.py` (keys, both
indexes, the stream); the audit table is what `user_created.py` writes.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from opskit.constructs import encrypted
from opskit.constructs.compliance import acknowledge
from opskit.profile import EnvironmentProfile

EMAIL_INDEX = "email-index"
CREATED_INDEX = "created-index"
AUDIT_TTL_ATTRIBUTE = "ttl"
PAGE_TOKEN_SECRET_CHARS = 64
"""The handler needs at least 32 characters; 64 alphanumerics hold about 380 bits."""

_S = dynamodb.AttributeType.STRING


class UserData(Construct):
    """The users table (users and e-mail guards, two sparse indexes, a stream of new and old
    images), the audit table (items expire through TTL), and the secret that signs page
    tokens. All encrypted, under the stack's data key where the profile asks; backups,
    deletion protection and removal follow the profile."""

    def __init__(self, scope: Construct, id: str, *, profile: EnvironmentProfile) -> None:
        super().__init__(scope, id)
        self.profile = profile
        self.users_table = encrypted.table(
            self,
            "Users",
            profile=profile,
            partition_key="user_id",
            holds="users' names and e-mail addresses",
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            deletion_protection=profile.deletion_protection,
        )
        self.users_table.add_global_secondary_index(
            index_name=EMAIL_INDEX,
            partition_key=dynamodb.Attribute(name="email", type=_S),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.users_table.add_global_secondary_index(
            index_name=CREATED_INDEX,
            partition_key=dynamodb.Attribute(name="created_day", type=_S),
            sort_key=dynamodb.Attribute(name="created_at", type=_S),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.audit_table = encrypted.table(
            self,
            "Audit",
            profile=profile,
            partition_key="audit_id",
            holds="audit records of user sign-ups, each expiring after 90 days",
            time_to_live_attribute=AUDIT_TTL_ATTRIBUTE,
            deletion_protection=profile.deletion_protection,
        )
        self.page_token_secret = secretsmanager.Secret(
            self,
            "PageTokenSecret",
            description="Signs the user API's page tokens (rotating it invalidates them)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=PAGE_TOKEN_SECRET_CHARS,
                exclude_punctuation=True,
                include_space=False,
            ),
            encryption_key=encrypted.data_key(self, profile),
            removal_policy=profile.removal_policy,
        )
        acknowledge(
            self.page_token_secret,
            "AwsSolutions-SMG4",
            "An HMAC key for page tokens, not a credential: rotating it only invalidates "
            "outstanding tokens (callers list again), so it is rotated by hand when needed",
        )
        if not profile.encrypt_data:
            acknowledge(
                self.page_token_secret,
                "CKV_AWS_149",
                f"Profile {profile.name!r} encrypts it with the AWS managed key for Secrets "
                "Manager (set encrypt_data for a customer-managed key); only the API function "
                "may read it (GetSecretValue on this secret alone)",
            )
