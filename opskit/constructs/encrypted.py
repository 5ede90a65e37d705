"""The encrypted building blocks every opskit construct uses: log groups and dead-letter queues.

One place decides how they are encrypted, retained and acknowledged, so every function,
API and capability gets the same answer to a security team's scanners.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.constructs.compliance import acknowledge
from opskit.profile import EnvironmentProfile

_LOGS_KEY_ID = "OpsKitLogsKey"


def logs_key(scope: Construct, profile: EnvironmentProfile) -> kms.Key:
    """The stack's key for log groups, created once; CloudWatch Logs of this account and
    region may use it for log groups only (the `aws:logs:arn` encryption context)."""
    stack = Stack.of(scope)
    existing = stack.node.try_find_child(_LOGS_KEY_ID)
    if isinstance(existing, kms.Key):
        return existing
    key = kms.Key(
        stack,
        _LOGS_KEY_ID,
        description=f"Encrypts opskit {profile.name} log groups",
        enable_key_rotation=True,
        removal_policy=profile.removal_policy,
    )
    # The log group is created with the key: the policy must allow the service first,
    # and it is part of the key resource, so it is.
    key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.{stack.url_suffix}")],
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
    return key


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
    if not profile.encrypt_logs:
        return
    stack = Stack.of(group)
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            resources=[logs_key(group, profile).key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"logs.{stack.region}.{stack.url_suffix}"}
            },
        )
    )


def dead_letter_queue(scope: Construct, id: str, *, profile: EnvironmentProfile) -> sqs.Queue:
    """An SSE-SQS encrypted, SSL-only queue that keeps undeliverable messages for 14 days."""
    queue = sqs.Queue(
        scope,
        id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
        removal_policy=profile.removal_policy,
    )
    acknowledge(
        queue,
        ("AwsSolutions-SQS3", "Serverless-SQSRedrivePolicy", "ES6000"),
        "This queue is itself a dead-letter queue; its depth is alarmed",
    )
    acknowledge(
        queue,
        "CKV_AWS_27",
        "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which checkov does "
        "not recognise",
    )
    return queue
