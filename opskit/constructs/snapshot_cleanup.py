"""SnapshotCleanup: a weekly, safe deletion of the account's expired EBS snapshots."""

from __future__ import annotations

from enum import Enum

from aws_cdk import ArnFormat, Duration, Stack, TimeZone
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.alarms import Severity, Thresholds, create_alarms
from opskit.constructs.compliance import acknowledge, acknowledge_wildcard_resources
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.monitoring import METRIC_PERIOD, Monitoring
from opskit.constructs.ops_function import AlarmThresholds, OpsFunction, ScheduleOptions
from opskit.constructs.paths import display_path
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

OWNERSHIP_TAGS = {"AutomatedBackup": "true", "CreatedBy": "opskit-backup"}
"""The tags the backup function puts on every snapshot it makes (opskit_common.tags)."""
PERMANENT_TAG = ("Retention", "permanent")
SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}
"""Checks the settings and the right to list snapshots after each deployment; deletes nothing."""
SERVICE_NAME = "snapshot-cleanup"
MAX_TIMEOUT = Duration.seconds(870)
"""Lambda's 15 minutes, less the 30 s OpsFunction gives its smoke-test hook on top."""
MIN_TIMEOUT = Duration.minutes(5)
"""The handler keeps about two and a half minutes free before its timeout (the worst case of
its last delete and of its report); a shorter timeout would leave too little for deleting."""
METRICS_NAMESPACE = "opskit"


class CleanupScope(Enum):
    """Which of the account's snapshots are candidates (the handler's SCOPE)."""

    OWNED = "owned"
    """Only snapshots the backup function made for this environment: both ownership tags and
    `Environment=<environment_name>`."""
    ALL = "all"
    """Every snapshot the account owns, of every environment: an explicit opt-in, for
    accounts without other tooling."""


def weekly(
    *, week_day: str = "SUN", hour: int = 3, minute: int = 0, time_zone: TimeZone | None = None
) -> scheduler.ScheduleExpression:
    """Once a week at ``hour:minute`` in ``time_zone`` (default UTC)."""
    return scheduler.ScheduleExpression.cron(
        minute=str(minute),
        hour=str(hour),
        week_day=week_day,
        time_zone=time_zone or TimeZone.ETC_UTC,
    )


class SnapshotCleanup(Construct):
    """Deletes the account's own EBS snapshots older than the retention, on a weekly schedule.

    Never one tagged `Retention=permanent`, referenced by one of the account's AMIs, managed
    by AWS Backup, locked, or among the newest `min_keep_per_volume` of its volume. With
    `CleanupScope.OWNED` (the default) only snapshots the backup function made for this
    environment are candidates, and the role may delete only snapshots carrying its
    ownership tags and `Environment=<environment_name>`, so a dev cleanup with a short
    retention never deletes prod's backups in a shared account; `CleanupScope.ALL` widens
    both to the whole account. Each run that deletes (or, dry, would delete) anything
    publishes a summary to the reports topic; failed deletions are counted in the
    `FailedDeletions` metric, whose alarm notifies the alert topics.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None = None,
        reports_topic: sns.ITopic | None = None,
        environment_name: str | None = None,
        retention_days: int = 30,
        cleanup_scope: CleanupScope = CleanupScope.OWNED,
        min_keep_per_volume: int = 1,
        schedule: scheduler.ScheduleExpression | None = None,
        schedule_enabled: bool | None = None,
        dry_run: bool = False,
        timeout: Duration | None = None,
        alarm_thresholds: AlarmThresholds | None = None,
        failed_deletions: Thresholds | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify, widgets are drawn and (unless
            `reports_topic`) run reports go (`Monitoring.reports_topic`).
        :param reports_topic: an existing topic for run reports. Default: the
            monitoring's reports topic; one of the two is required.
        :param environment_name: with `CleanupScope.OWNED`, the `Environment` tag of the
            snapshots it may delete (the backup's `environment_name`). Default: the
            profile's name.
        :param retention_days: snapshots started longer ago than this are candidates
            (RETENTION_DAYS; at least 1). Default: 30.
        :param cleanup_scope: Default: `CleanupScope.OWNED`.
        :param min_keep_per_volume: usable snapshots always kept per volume, counting
            every snapshot of the volume (0 turns the rule off). Default: 1.
        :param schedule: when to run. Default: `weekly()`, Sundays 03:00 UTC.
        :param schedule_enabled: Default: the profile's `schedules_enabled`.
        :param dry_run: scheduled runs only report what they would delete. Default: False.
        :param timeout: the function's timeout, 5 to 14.5 minutes (its smoke test gets 30 s
            more, within Lambda's 15); a run stops cleanly before it and the next run
            continues. Default: 14 minutes.
        :param alarm_thresholds: the function's alarms. Default: `AlarmThresholds()`.
        :param failed_deletions: alarm thresholds on failed deletions per five minutes.
            Default: warning at 1.
        """
        super().__init__(scope, id)
        if retention_days < 1:
            raise PropsError(f"{self.node.path}: retention_days must be >= 1, got {retention_days}")
        if min_keep_per_volume < 0:
            raise PropsError(
                f"{self.node.path}: min_keep_per_volume must be >= 0, got {min_keep_per_volume}"
            )
        timeout = timeout or Duration.minutes(14)
        if timeout.to_seconds() > MAX_TIMEOUT.to_seconds():
            raise PropsError(
                f"{self.node.path}: timeout must be at most 870 seconds, got {timeout.to_seconds()}"
            )
        if timeout.to_seconds() < MIN_TIMEOUT.to_seconds():
            raise PropsError(
                f"{self.node.path}: timeout must be at least 300 seconds, "
                f"got {timeout.to_seconds()}"
            )
        environment_name = profile.name if environment_name is None else environment_name
        if not environment_name.strip():
            raise PropsError(f"{self.node.path}: environment_name must not be empty")
        self.environment_name = environment_name
        topic = reports_topic or (monitoring.reports_topic if monitoring else None)
        if topic is None:
            raise PropsError(f"{self.node.path}: give monitoring or reports_topic for run reports")
        self.reports_topic: sns.ITopic = topic
        self.cleanup_scope = cleanup_scope

        self.cleaner = OpsFunction(
            self,
            "Cleaner",
            entry=FUNCTIONS_DIR / "snapshot_cleanup",
            profile=profile,
            monitoring=monitoring,
            description="Deletes expired EBS snapshots the account owns, never protected ones",
            service_name=SERVICE_NAME,
            environment={
                "RETENTION_DAYS": str(retention_days),
                "SCOPE": cleanup_scope.value,
                "MIN_KEEP_PER_VOLUME": str(min_keep_per_volume),
                "SNS_TOPIC_ARN": topic.topic_arn,
                "ENVIRONMENT": environment_name,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            },
            layers=[common_layer(self), powertools_layer(self)],
            timeout=timeout,
            alarm_thresholds=alarm_thresholds,
            schedule=ScheduleOptions(
                expression=schedule or weekly(),
                input={"dry_run": dry_run},
                enabled=schedule_enabled,
                description=f"Weekly EBS snapshot cleanup ({environment_name})",
            ),
            smoke_test_event=SMOKE_TEST_EVENT,
        )
        self._grant(topic)

        self.failed_deletions_metric = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="FailedDeletions",
            dimensions_map={"service": SERVICE_NAME, "environment": environment_name},
            statistic="Sum",
            period=METRIC_PERIOD,
        )
        self.deleted_snapshots_metric = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="DeletedSnapshots",
            dimensions_map={"service": SERVICE_NAME, "environment": environment_name},
            statistic="Sum",
            period=METRIC_PERIOD,
        )
        self.alarms = create_alarms(
            self,
            "FailedDeletions",
            metric=self.failed_deletions_metric,
            thresholds=({Severity.WARNING: 1} if failed_deletions is None else failed_deletions),
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description=f"{display_path(self)}: snapshots the cleanup could not delete",
            actions_enabled=profile.alarm_actions_enabled,
            monitoring=monitoring,
        )
        if monitoring is not None:
            monitoring.dashboard_for(self).add_widgets(
                cloudwatch.GraphWidget(
                    title="Snapshot cleanup",
                    left=[self.deleted_snapshots_metric, self.failed_deletions_metric],
                    width=24,
                    height=6,
                )
            )

    def _grant(self, topic: sns.ITopic) -> None:
        role = self.cleaner.role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListSnapshotsAndImages",
                actions=[
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeImages",
                    "ec2:DescribeLockedSnapshots",
                ],
                resources=["*"],
            )
        )
        key, value = PERMANENT_TAG
        conditions: dict[str, dict[str, str]] = {
            "StringNotEqualsIgnoreCase": {f"ec2:ResourceTag/{key}": value}
        }
        if self.cleanup_scope is CleanupScope.OWNED:
            owned = {**OWNERSHIP_TAGS, "Environment": self.environment_name}
            conditions["StringEquals"] = {
                f"ec2:ResourceTag/{tag}": tag_value for tag, tag_value in owned.items()
            }
        snapshots = Stack.of(self).format_arn(
            service="ec2",
            account="",
            resource="snapshot",
            resource_name="*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteExpiredSnapshots",
                actions=["ec2:DeleteSnapshot"],
                resources=[snapshots],
                conditions=conditions,
            )
        )
        topic.grant_publish(role)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeSnapshots, ec2:DescribeImages and ec2:DescribeLockedSnapshots have no "
            "resource-level permissions",
        )
        acknowledge_wildcard_resources(
            role,
            [snapshots],
            "Which snapshots expire is only known at run time; DeleteSnapshot is conditioned "
            "on their tags (ownership and environment with scope owned, never "
            "Retention=permanent)",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to the KMS-encrypted reports topic; CDK's grant, on that one key only",
        )
