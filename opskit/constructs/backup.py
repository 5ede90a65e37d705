"""BackupAutomation: nightly EBS and RDS snapshots of tagged resources, with retention."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from aws_cdk import Duration, Stack, TimeZone
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

OWNERSHIP_TAGS: Mapping[str, str] = {"AutomatedBackup": "true", "CreatedBy": "opskit-backup"}
"""What every snapshot the function makes carries; creation requires them in the request and
deletion requires them on the snapshot (the handler's opskit_common.tags.BACKUP_OWNERSHIP_TAGS)."""
RDS_SNAPSHOT_NAME = "*-opskit-*"
"""The function names RDS snapshots `<db>-opskit-<YYYYMMDD-HHMMSS>`; its RDS snapshot
permissions cover no other names."""
METRIC_NAMESPACE = "opskit"
SERVICE_NAME = "backup"
SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}
"""After each deployment: a dry run without report, failing if any listing fails."""
DEFAULT_RETENTION_DAYS = 7
MIN_TIMEOUT = Duration.minutes(5)
"""The handler keeps about two minutes free before its timeout (the worst case of its last
EC2/RDS call and of its report); a shorter timeout would leave too little for the work."""
PERMANENT_TAG = ("Retention", "permanent")
"""Never deleted, whoever made it (the handler's opskit_common.tags.PERMANENT_TAG)."""


class BackupType(Enum):
    """What a scheduled run backs up (the event's `backup_type`)."""

    ALL = "all"
    EC2 = "ec2"
    RDS = "rds"


def default_schedule() -> scheduler.ScheduleExpression:
    """02:00 UTC every night."""
    return scheduler.ScheduleExpression.cron(minute="0", hour="2", time_zone=TimeZone.ETC_UTC)


class BackupAutomation(Construct):
    """Snapshots the EC2 instances and RDS databases tagged `Environment=<env>` and
    `Backup=true` every night, and deletes the snapshots it made once they are older than
    the retention.

    The function's permissions follow its ownership tags: it may create snapshots only
    when the request carries `AutomatedBackup=true`, `CreatedBy=opskit-backup` and
    `Environment=<env>`, snapshot only databases tagged `Backup=true` and
    `Environment=<env>`, tag EC2 snapshots only while creating them, delete only snapshots
    that carry all three tags and not `Retention=permanent`, and touch RDS snapshots only
    under the `*-opskit-*` names it gives them. The handler refuses an event that names
    another environment. Each run reports
    to the reports topic; resources it could not back up are counted in the
    `FailedResources` metric, whose alarm notifies the alert topics.
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
        retention_days: int = DEFAULT_RETENTION_DAYS,
        backup_type: BackupType = BackupType.ALL,
        schedule: scheduler.ScheduleExpression | None = None,
        schedule_enabled: bool | None = None,
        timeout: Duration | None = None,
        alarm_thresholds: AlarmThresholds | None = None,
        failed_resources_thresholds: Thresholds | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify, widgets are drawn, and (unless
            `reports_topic` is given) run reports go. Give this or `reports_topic`.
        :param reports_topic: an existing topic for the run reports. Default:
            `monitoring.reports_topic`.
        :param environment_name: the `Environment` tag value whose resources are backed up.
            Default: the profile's name.
        :param retention_days: owned snapshots older than this are deleted. Default: 7.
        :param backup_type: what the schedule backs up. Default: EC2 and RDS.
        :param schedule: when to run (cron or rate, with a time zone). Default: 02:00 UTC
            every night.
        :param schedule_enabled: Default: the profile's `schedules_enabled`.
        :param timeout: at least 5 minutes. Default: 5 minutes; the function stops starting
            new work about two minutes before it.
        :param alarm_thresholds: the function's own alarms. Default: `AlarmThresholds()`.
        :param failed_resources_thresholds: resources that failed in a run (sum over five
            minutes) above which the alarm fires, by severity. Default: warning above 0.
        """
        super().__init__(scope, id)
        topic = reports_topic or (monitoring.reports_topic if monitoring is not None else None)
        if topic is None:
            raise PropsError(f"{self.node.path}: give monitoring or reports_topic")
        if isinstance(retention_days, bool) or not isinstance(retention_days, int):
            raise PropsError(f"{self.node.path}: retention_days must be a whole number")
        if retention_days < 1:
            raise PropsError(f"{self.node.path}: retention_days must be >= 1, got {retention_days}")
        environment_name = profile.name if environment_name is None else environment_name
        if not environment_name.strip():
            raise PropsError(f"{self.node.path}: environment_name must not be empty")
        timeout = timeout or MIN_TIMEOUT
        if timeout.to_seconds() < MIN_TIMEOUT.to_seconds():
            raise PropsError(
                f"{self.node.path}: timeout must be at least {MIN_TIMEOUT.to_seconds():g} "
                f"seconds, got {timeout.to_seconds():g}"
            )

        self.environment_name = environment_name
        self.retention_days = retention_days
        self.reports_topic: sns.ITopic = topic
        self.function = OpsFunction(
            self,
            "Function",
            entry=FUNCTIONS_DIR / "backup",
            profile=profile,
            monitoring=monitoring,
            description=f"Snapshots EC2 and RDS resources of {environment_name} tagged Backup=true",
            service_name=SERVICE_NAME,
            environment={
                "ENVIRONMENT": environment_name,
                "SNS_TOPIC_ARN": self.reports_topic.topic_arn,
                "BACKUP_RETENTION_DAYS": str(retention_days),
                "POWERTOOLS_METRICS_NAMESPACE": METRIC_NAMESPACE,
            },
            layers=[common_layer(self), powertools_layer(self)],
            timeout=timeout,
            alarm_thresholds=alarm_thresholds,
            schedule=ScheduleOptions(
                expression=schedule or default_schedule(),
                input={
                    "backup_type": backup_type.value,
                    "environment": environment_name,
                    "dry_run": False,
                },
                enabled=schedule_enabled,
                description=f"Nightly backup of {environment_name} ({display_path(self)})",
            ),
            smoke_test_event=SMOKE_TEST_EVENT,
        )
        self.reports_topic.grant_publish(self.function.role)
        acknowledge(
            self.function.role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to the KMS-encrypted reports topic needs data keys of its key "
            "(Topic.grantPublish), granted on that key only",
        )
        self._grant_backups(self.function.role)

        self.failed_resources = self._metric("FailedResources")
        """Resources a run could not back up or clean up, from the function's EMF output;
        its dimensions name the environment, so environments sharing an account differ."""
        self.alarms = create_alarms(
            self,
            "FailedResources",
            metric=self.failed_resources,
            thresholds=(
                {Severity.WARNING: 0}
                if failed_resources_thresholds is None
                else failed_resources_thresholds
            ),
            description=f"{display_path(self)}: resources the {environment_name} backup failed on",
            actions_enabled=profile.alarm_actions_enabled,
            monitoring=monitoring,
        )
        if monitoring is not None:
            monitoring.dashboard_for(self).add_widgets(
                cloudwatch.GraphWidget(
                    title=f"Backups of {environment_name}",
                    left=[
                        self._metric("FailedResources", label="failed resources"),
                        self._metric("SnapshotsCreated", label="snapshots created"),
                        self._metric("SnapshotsDeleted", label="snapshots deleted"),
                    ],
                    width=24,
                    height=6,
                )
            )

    def _metric(self, name: str, *, label: str | None = None) -> cloudwatch.Metric:
        """A count the function emits (EMF), per environment: `service` and `environment`."""
        return cloudwatch.Metric(
            namespace=METRIC_NAMESPACE,
            metric_name=name,
            dimensions_map={"service": SERVICE_NAME, "environment": self.environment_name},
            statistic="Sum",
            period=METRIC_PERIOD,
            label=label,
        )

    def _grant_backups(self, role: iam.Role) -> None:
        """Inline statements, each as narrow as the API allows (checked against the Service
        Authorization Reference: which resource types and condition keys each action has).

        `aws:RequestTag/*` is an action-level key of ec2:CreateSnapshot (snapshot resource),
        rds:CreateDBSnapshot, rds:CreateDBClusterSnapshot and rds:AddTagsToResource;
        `ec2:ResourceTag/*` one of the snapshot of ec2:DeleteSnapshot; `rds:db-tag/*`,
        `rds:cluster-tag/*`, `rds:snapshot-tag/*` and `rds:cluster-snapshot-tag/*` keys of
        the db, cluster, snapshot and cluster-snapshot resource types."""
        stack = Stack.of(self)
        partition, region, account = stack.partition, stack.region, stack.account
        ec2_snapshots = f"arn:{partition}:ec2:{region}::snapshot/*"
        rds = f"arn:{partition}:rds:{region}:{account}"
        owned = {**OWNERSHIP_TAGS, "Environment": self.environment_name}
        owned_request = {f"aws:RequestTag/{key}": value for key, value in owned.items()}

        def deletable(prefix: str) -> dict[str, dict[str, str]]:
            """Owned by this environment's backup, and not tagged Retention=permanent."""
            key, value = PERMANENT_TAG
            return {
                "StringEquals": {f"{prefix}/{tag}": tag_value for tag, tag_value in owned.items()},
                "StringNotEqualsIgnoreCase": {f"{prefix}/{key}": value},
            }

        def tagged_for_backup(prefix: str) -> dict[str, dict[str, str]]:
            return {
                "StringEqualsIgnoreCase": {f"{prefix}/Backup": "true"},
                "StringEquals": {f"{prefix}/Environment": self.environment_name},
            }

        statements = [
            # None of these EC2 listings has resource-level permissions. Retention reads AMIs
            # and snapshot locks to skip what EC2 would refuse to delete.
            iam.PolicyStatement(
                sid="ListInstancesAndSnapshots",
                actions=[
                    "ec2:DescribeInstances",
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeImages",
                    "ec2:DescribeLockedSnapshots",
                ],
                resources=["*"],
            ),
            # RDS authorizes a listing of everything on the account's wildcard ARN of the
            # type (db:*, ...); the snapshot listings name the source type as well.
            iam.PolicyStatement(
                sid="ListDatabases",
                actions=["rds:DescribeDBInstances"],
                resources=[f"{rds}:db:*"],
            ),
            iam.PolicyStatement(
                sid="ListClusters",
                actions=["rds:DescribeDBClusters"],
                resources=[f"{rds}:cluster:*"],
            ),
            iam.PolicyStatement(
                sid="ListDatabaseSnapshots",
                actions=["rds:DescribeDBSnapshots"],
                resources=[f"{rds}:snapshot:*", f"{rds}:db:*"],
            ),
            iam.PolicyStatement(
                sid="ListClusterSnapshots",
                actions=["rds:DescribeDBClusterSnapshots"],
                resources=[f"{rds}:cluster-snapshot:*", f"{rds}:cluster:*"],
            ),
            # CreateSnapshot authorizes the volume and the new snapshot separately; the
            # request tags are a condition key of the snapshot only.
            iam.PolicyStatement(
                sid="SnapshotVolumes",
                actions=["ec2:CreateSnapshot"],
                resources=[f"arn:{partition}:ec2:{region}:{account}:volume/*"],
            ),
            iam.PolicyStatement(
                sid="CreateOwnedEbsSnapshots",
                actions=["ec2:CreateSnapshot"],
                resources=[ec2_snapshots],
                conditions={"StringEquals": owned_request},
            ),
            iam.PolicyStatement(
                sid="TagEbsSnapshotsOnCreation",
                actions=["ec2:CreateTags"],
                resources=[ec2_snapshots],
                conditions={"StringEquals": {"ec2:CreateAction": "CreateSnapshot"}},
            ),
            iam.PolicyStatement(
                sid="DeleteOwnedEbsSnapshots",
                actions=["ec2:DeleteSnapshot"],
                resources=[ec2_snapshots],
                conditions=deletable("ec2:ResourceTag"),
            ),
            # CreateDBSnapshot / CreateDBClusterSnapshot authorize the database (by its own
            # tag) and the new snapshot (by the request's tags) separately.
            iam.PolicyStatement(
                sid="SnapshotTaggedDatabases",
                actions=["rds:CreateDBSnapshot"],
                resources=[f"{rds}:db:*"],
                conditions=tagged_for_backup("rds:db-tag"),
            ),
            iam.PolicyStatement(
                sid="SnapshotTaggedClusters",
                actions=["rds:CreateDBClusterSnapshot"],
                resources=[f"{rds}:cluster:*"],
                conditions=tagged_for_backup("rds:cluster-tag"),
            ),
            # Tags given to a create call are authorized again as AddTagsToResource.
            iam.PolicyStatement(
                sid="CreateOwnedRdsSnapshots",
                actions=[
                    "rds:CreateDBSnapshot",
                    "rds:CreateDBClusterSnapshot",
                    "rds:AddTagsToResource",
                ],
                resources=[
                    f"{rds}:snapshot:{RDS_SNAPSHOT_NAME}",
                    f"{rds}:cluster-snapshot:{RDS_SNAPSHOT_NAME}",
                ],
                conditions={"StringEquals": owned_request},
            ),
            iam.PolicyStatement(
                sid="DeleteOwnedDbSnapshots",
                actions=["rds:DeleteDBSnapshot"],
                resources=[f"{rds}:snapshot:{RDS_SNAPSHOT_NAME}"],
                conditions=deletable("rds:snapshot-tag"),
            ),
            iam.PolicyStatement(
                sid="DeleteOwnedClusterSnapshots",
                actions=["rds:DeleteDBClusterSnapshot"],
                resources=[f"{rds}:cluster-snapshot:{RDS_SNAPSHOT_NAME}"],
                conditions=deletable("rds:cluster-snapshot-tag"),
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        self._acknowledge_wildcards(role, statements)

    def _acknowledge_wildcards(self, role: iam.Role, statements: list[iam.PolicyStatement]) -> None:
        """Names each wildcard resource in cdk-nag's terms, with why it cannot be narrower."""
        reasons = {
            "*": "DescribeInstances, DescribeSnapshots, DescribeImages and "
            "DescribeLockedSnapshots have no resource-level permissions",
            ":db:*": "Listing all DB instances is authorized on db:*; snapshots only of DBs "
            "tagged Backup=true",
            ":cluster:*": "Listing all DB clusters is authorized on cluster:*; snapshots only of "
            "clusters tagged Backup=true",
            ":snapshot:*": "Listing all manual DB snapshots, to find the owned ones past retention",
            ":cluster-snapshot:*": "Listing all manual DB cluster snapshots, to find the owned "
            "ones past retention",
            "volume/*": "Any attached volume of an instance tagged Backup=true may be snapshotted; "
            "volumes carry no tag to condition on",
            "snapshot/*": "New snapshot ids are unknown in advance; creation requires the "
            "ownership tags in the request, deletion on the snapshot",
            RDS_SNAPSHOT_NAME: "Only the function's own snapshot names; creation requires the "
            "ownership tags in the request, deletion on the snapshot",
        }
        by_reason: dict[str, list[str]] = {}
        for resource in sorted({r for s in statements for r in s.resources}):
            reason = next(reasons[end] for end in reasons if resource.endswith(end))
            by_reason.setdefault(reason, []).append(resource)
        for reason, resources in by_reason.items():
            acknowledge_wildcard_resources(role, resources, reason)
