"""The user service's state: the users table, the audit table and the page-token secret.

The users table is the data model of `opskit/functions/user_service/users.py` (keys, both
indexes, the stream); the audit table is what `user_created.py` writes.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

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
    tokens. All encrypted; backups, deletion protection and removal follow the profile."""

    def __init__(self, scope: Construct, id: str, *, profile: EnvironmentProfile) -> None:
        super().__init__(scope, id)
        self.profile = profile
        self.users_table = self._table(
            "Users",
            partition_key="user_id",
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            holds="users' names and e-mail addresses",
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
        self.audit_table = self._table(
            "Audit",
            partition_key="audit_id",
            time_to_live_attribute=AUDIT_TTL_ATTRIBUTE,
            holds="audit records of user sign-ups, each expiring after 90 days",
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
            removal_policy=profile.removal_policy,
        )
        acknowledge(
            self.page_token_secret,
            "AwsSolutions-SMG4",
            "An HMAC key for page tokens, not a credential: rotating it only invalidates "
            "outstanding tokens (callers list again), so it is rotated by hand when needed",
        )
        acknowledge(
            self.page_token_secret,
            "CKV_AWS_149",
            "Encrypted with the AWS managed key for Secrets Manager; only the API function "
            "may read it (GetSecretValue on this secret alone)",
        )

    def _table(
        self,
        id: str,
        *,
        partition_key: str,
        holds: str,
        stream: dynamodb.StreamViewType | None = None,
        time_to_live_attribute: str | None = None,
    ) -> dynamodb.Table:
        profile = self.profile
        table = dynamodb.Table(
            self,
            id,
            partition_key=dynamodb.Attribute(name=partition_key, type=_S),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            stream=stream,
            time_to_live_attribute=time_to_live_attribute,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=profile.point_in_time_recovery
            ),
            deletion_protection=profile.deletion_protection,
            removal_policy=profile.removal_policy,
        )
        if not profile.point_in_time_recovery:
            acknowledge(
                table,
                ("AwsSolutions-DDB3", "CKV_AWS_28"),
                f"Profile {profile.name!r} keeps no point-in-time recovery (its data is not "
                "kept either: removal policy and backups follow the profile)",
            )
        acknowledge(
            table,
            "CKV_AWS_119",
            f"Encrypted at rest with the AWS managed key (aws/dynamodb); it holds {holds}, "
            "readable only by the functions granted per action on this table",
        )
        return table
