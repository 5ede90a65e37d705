"""The encrypted building blocks every opskit construct uses: log groups and dead-letter queues.

One place decides how they are encrypted, retained and acknowledged, so every function,
API and capability gets the same answer to a security team's scanners.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.constructs.compliance import acknowledge, acknowledge_each
from opskit.constructs.per_stack import once_per_stack
from opskit.profile import EnvironmentProfile

_LOGS_KEY_ID = "OpsKitLogsKey"
DEAD_LETTER_RETENTION = Duration.days(14)
"""SQS's longest: what cannot be delivered waits as long as it can for a person."""


def logs_key(scope: Construct, profile: EnvironmentProfile) -> kms.Key:
    """The stack's key for log groups, created once; CloudWatch Logs of this account and
    region may use it for log groups only (the `aws:logs:arn` encryption context). It is
    kept on stack deletion if any log group under it is: a deleted key would leave a
    retained log group unreadable."""
    held = _logs_key(scope, profile)
    if profile.removal_policy != RemovalPolicy.DESTROY and not held.retained:
        held.key.apply_removal_policy(RemovalPolicy.RETAIN)
        held.retained = True
    return held.key


def _logs_key(scope: Construct, profile: EnvironmentProfile) -> _LogsKey:
    return once_per_stack(scope, _LOGS_KEY_ID, lambda stack: _LogsKey(stack, profile))


class _LogsKey:
    """The key, and how a role that writes to its log groups is allowed to use it."""

    def __init__(self, stack: Stack, profile: EnvironmentProfile) -> None:
        self.key = kms.Key(
            stack,
            _LOGS_KEY_ID,
            description=f"Encrypts opskit {profile.name} log groups",
            enable_key_rotation=True,
            removal_policy=profile.removal_policy,
        )
        self.retained = profile.removal_policy != RemovalPolicy.DESTROY
        self.logs_service = f"logs.{stack.region}.{stack.url_suffix}"
        # The log group is created with the key: the policy must allow the service first,
        # and it is part of the key resource, so it is.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(self.logs_service)],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                        )
                    }
                },
            )
        )
        self.key_arn = self.key.key_arn

    def writer_statement(self) -> iam.PolicyStatement:
        """A new statement each time: a statement belongs to one policy document."""
        return iam.PolicyStatement(
            actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            resources=[self.key_arn],
            conditions={"StringEquals": {"kms:ViaService": self.logs_service}},
        )


def log_group(scope: Construct, id: str, *, profile: EnvironmentProfile) -> logs.LogGroup:
    """A log group with the profile's retention and removal policy, under the stack's logs
    key when the profile asks for customer-managed encryption."""
    group = logs.LogGroup(
        scope,
        id,
        retention=profile.log_retention,
        removal_policy=profile.removal_policy,
        encryption_key=logs_key(scope, profile) if profile.encrypt_logs else None,
    )
    if not profile.encrypt_logs:
        acknowledge(
            group,
            "CKV_AWS_158",
            f"Profile {profile.name!r} keeps CloudWatch Logs' own encryption at rest; "
            "set encrypt_logs for a customer-managed key",
        )
    return group


def allow_log_writes(group: logs.LogGroup, role: iam.IRole, *, profile: EnvironmentProfile) -> None:
    """Lets `role` write to `group`, and, where the group is under the logs key, use the key
    through CloudWatch Logs only (`kms:ViaService`), as CloudWatch Logs asks of its callers."""
    group.grant_write(role)
    if profile.encrypt_logs:
        role.add_to_principal_policy(_logs_key(group, profile).writer_statement())


def dead_letter_queue(scope: Construct, id: str, *, profile: EnvironmentProfile) -> sqs.Queue:
    """An SSE-SQS encrypted, SSL-only queue that keeps undeliverable messages for 14 days."""
    queue = sqs.Queue(
        scope,
        id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=DEAD_LETTER_RETENTION,
        removal_policy=profile.removal_policy,
    )
    itself = "This queue is itself a dead-letter queue; its depth is alarmed"
    acknowledge_each(
        queue,
        {
            "AwsSolutions-SQS3": itself,
            "Serverless-SQSRedrivePolicy": itself,
            "ES6000": itself,
            "CKV_AWS_27": "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), "
            "which checkov does not recognise",
        },
    )
    return queue
