"""The encrypted building blocks every opskit construct uses: log groups, dead-letter queues,
tables and the keys behind them.

One place decides how they are encrypted, retained and acknowledged, so every function,
API and capability gets the same answer to a security team's scanners.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.constructs.compliance import acknowledge, acknowledge_each
from opskit.constructs.per_stack import made_in_stack, once_per_stack
from opskit.profile import EnvironmentProfile
from opskit.references import reference

_LOGS_KEY_ID = "OpsKitLogsKey"
_DATA_KEY_ID = "OpsKitDataKey"
DEAD_LETTER_RETENTION = Duration.days(14)
"""SQS's longest: what cannot be delivered waits as long as it can for a person."""


def logs_key(scope: Construct, profile: EnvironmentProfile) -> kms.Key:
    """The stack's key for log groups, created once; CloudWatch Logs of this account and
    region may use it for log groups only (the `aws:logs:arn` encryption context)."""
    return _kept(_logs_key(scope, profile), profile).key


def data_key(scope: Construct, profile: EnvironmentProfile) -> kms.Key | None:
    """The stack's key for tables and secrets when the profile asks for customer-managed
    encryption (`encrypt_data`), created once; None: the AWS managed keys.

    Its policy lets DynamoDB use it for any caller of this account, as the AWS managed key
    for DynamoDB does: what a caller may read or write stays decided by its DynamoDB
    permissions on each table. Per-role statements would instead reach each role after
    the tables switch keys (a role's policy names its table, so CloudFormation updates it
    later), and would miss callers added outside opskit, such as a stream's reader.
    Secrets Manager gets CDK's own statements for each secret.
    """
    if not profile.encrypt_data:
        return None
    return _kept(
        once_per_stack(scope, _DATA_KEY_ID, lambda stack: _DataKey(stack, profile)), profile
    ).key


def _logs_key(scope: Construct, profile: EnvironmentProfile) -> _LogsKey:
    return once_per_stack(scope, _LOGS_KEY_ID, lambda stack: _LogsKey(stack, profile))


class _StackKey:
    """A stack's key, rotated yearly, and whether it is kept on stack deletion."""

    def __init__(self, stack: Stack, id: str, encrypts: str, profile: EnvironmentProfile) -> None:
        self.key = kms.Key(
            stack,
            id,
            description=f"Encrypts {encrypts}",
            enable_key_rotation=True,
            removal_policy=profile.removal_policy,
        )
        self.retained = profile.removal_policy != RemovalPolicy.DESTROY


def _kept(held: _StackKey, profile: EnvironmentProfile) -> _StackKey:
    """A key is kept on stack deletion if anything under it is: a deleted key would leave a
    retained log group, table or secret unreadable."""
    if profile.removal_policy != RemovalPolicy.DESTROY and not held.retained:
        held.key.apply_removal_policy(RemovalPolicy.RETAIN)
        held.retained = True
    return held


class _DataKey(_StackKey):
    def __init__(self, stack: Stack, profile: EnvironmentProfile) -> None:
        super().__init__(stack, _DATA_KEY_ID, f"opskit {profile.name} tables and secrets", profile)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.AnyPrincipal()],
                actions=TABLE_CALLER_KEY_ACTIONS,
                resources=["*"],
                conditions={
                    "StringEquals": {
                        "kms:CallerAccount": stack.account,
                        "kms:ViaService": _via_dynamodb(stack),
                    }
                },
            )
        )
        acknowledge(
            self.key,
            "CKV_AWS_33",
            "DynamoDB's own pattern for a table key: callers of this account only "
            "(kms:CallerAccount), through DynamoDB only (kms:ViaService); what each may read "
            "is decided by its DynamoDB permissions on the table",
        )


def _via_dynamodb(stack: Stack) -> list[str]:
    """DynamoDB's kms:ViaService value; its host is written both ways, since no reference
    gives the value in partitions whose domain is not amazonaws.com (aws-cn)."""
    return [f"dynamodb.{stack.region}.amazonaws.com", f"dynamodb.{stack.region}.{stack.url_suffix}"]


class _LogsKey(_StackKey):
    """The key, and how a role that writes to its log groups is allowed to use it."""

    def __init__(self, stack: Stack, profile: EnvironmentProfile) -> None:
        super().__init__(stack, _LOGS_KEY_ID, f"opskit {profile.name} log groups", profile)
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


def table(
    scope: Construct,
    id: str,
    *,
    profile: EnvironmentProfile,
    partition_key: str,
    holds: str,
    **options: Any,
) -> dynamodb.Table:
    """An on-demand table keyed by the string `partition_key`, encrypted (under the stack's
    data key when the profile asks), with the profile's point-in-time recovery and removal
    policy. `holds` says what is in it, for the scanners' acknowledgements; `options` are
    any other `dynamodb.Table` properties."""
    key = data_key(scope, profile)
    created = dynamodb.Table(
        scope,
        id,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=(
            dynamodb.TableEncryption.CUSTOMER_MANAGED
            if key
            else dynamodb.TableEncryption.AWS_MANAGED
        ),
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=profile.point_in_time_recovery
        ),
        removal_policy=profile.removal_policy,
        **options,
    )
    if not profile.point_in_time_recovery:
        acknowledge(
            created,
            ("AwsSolutions-DDB3", "CKV_AWS_28"),
            f"Profile {profile.name!r} keeps no point-in-time recovery (nor its data: removal "
            f"policy and backups follow the profile); it holds {holds}",
        )
    if key is None:
        acknowledge(
            created,
            "CKV_AWS_119",
            f"Profile {profile.name!r} encrypts at rest with the AWS managed key (aws/dynamodb); "
            f"set encrypt_data for a customer-managed key. It holds {holds}",
        )
    return created


TABLE_CALLER_KEY_ACTIONS = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
]
"""What DynamoDB asks of a table's callers on its customer-managed key (its encryption at
rest guide; CreateGrant only for whoever creates the table), each named, so no wildcard."""


def allow_table_key_use(table: dynamodb.ITable, grantee: iam.IGrantable) -> None:
    """Lets `grantee`, which calls `table`, use the table's customer-managed key through
    DynamoDB only (`kms:ViaService`): DynamoDB decrypts a caller's table key with the
    caller's own permissions. Nothing to do for a table under an AWS managed key or the
    stack's data key, whose policy already allows it."""
    key = table.encryption_key
    if key is None or _is_data_key(key):
        return
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=TABLE_CALLER_KEY_ACTIONS,
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": _via_dynamodb(Stack.of(table))}},
        )
    )


def _is_data_key(key: kms.IKey) -> bool:
    """Whether `key` is the data key opskit made in its stack (not one that merely shares
    its id elsewhere in the tree)."""
    made = made_in_stack(key, _DATA_KEY_ID)
    return made is not None and reference(made.key) == reference(key)
