"""EnvironmentScheduler: a non-production environment off out of hours, and its idle instances."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import ArnFormat, Duration, Stack, TimeZone
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
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

SERVICE_NAME = "environment-scheduler"
METRICS_NAMESPACE = "opskit"
ENVIRONMENT_TAG = "Environment"
AUTOSCALE_TAG = ("AutoScale", "true")
SAVED_CAPACITY_TAG = "opskit:saved-capacity"
"""The one tag the function may write and delete, on Auto Scaling groups (the handler's too)."""

_DAY = "(SUN|MON|TUE|WED|THU|FRI|SAT)"
WEEK_DAYS = re.compile(rf"^{_DAY}(-{_DAY})?(,{_DAY}(-{_DAY})?)*$")
"""Days of the week as EventBridge Scheduler cron takes them: `MON-FRI`, `MON,WED,FRI`."""
WEEK_DAY = re.compile(rf"^{_DAY}$")
TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
"""24-hour `HH:MM`."""


@dataclass(frozen=True)
class SchedulerTimes:
    """When the environment scheduler runs, in the local time of `time_zone`."""

    time_zone: TimeZone = field(default_factory=lambda: TimeZone.ETC_UTC)
    """Default: UTC. Scheduler follows daylight saving time in zones that have it."""
    week_days: str = "MON-FRI"
    """The working days: scaled down on their evenings, up on their mornings, so the
    environment stays down from the last evening to the first morning."""
    scale_down_at: str = "19:00"
    scale_up_at: str = "07:00"
    report_day: str = "WED"
    """Mid-week, so the report's 24 hours are a working day with the environment up."""
    report_at: str = "10:00"

    def check(self) -> None:
        """Raises ValueError naming the first field that Scheduler would not accept."""
        if not WEEK_DAYS.match(self.week_days):
            raise ValueError(
                f"week_days {self.week_days!r} is not days such as MON-FRI or MON,WED,FRI"
            )
        if not WEEK_DAY.match(self.report_day):
            raise ValueError(f"report_day {self.report_day!r} is not one of SUN, MON, ... SAT")
        for name in ("scale_down_at", "scale_up_at", "report_at"):
            if not TIME_OF_DAY.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a 24-hour HH:MM time")
        if self.scale_down_at == self.scale_up_at:
            raise ValueError(f"scale_down_at and scale_up_at are both {self.scale_up_at}")

    def cron(self, days: str, at: str) -> scheduler.ScheduleExpression:
        hour, minute = (str(int(part)) for part in at.split(":"))
        return scheduler.ScheduleExpression.cron(
            minute=minute, hour=hour, week_day=days, time_zone=self.time_zone
        )


class EnvironmentScheduler(Construct):
    """Stops a non-production environment out of hours, and reports its idle instances weekly.

    One function, three schedules on its alias: on the working days' evenings it stops the
    environment's running instances tagged `AutoScale=true` and scales its Auto Scaling
    groups to zero, saving each group's capacity in a tag on the group; on their mornings it
    restores the groups and starts the instances. Weekly, it sends the environment's running
    instances with their average CPU over 24 hours, idle ones (< 5 %) flagged, to the reports
    topic. Only the profile decides whether the environment scales: with
    `scale_down_off_hours` off (the built-in PROD), the function gets no permission to stop,
    start or resize anything and refuses to (ALLOWED_ENVIRONMENTS is empty); only the report
    is built, because knowing what sits idle matters there too.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None = None,
        reports_topic: sns.ITopic | None = None,
        times: SchedulerTimes | None = None,
        ebs_encryption_keys: Sequence[kms.IKey] = (),
        alarm_thresholds: AlarmThresholds | None = None,
        failed_resources_thresholds: Thresholds | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour; it names the environment scheduled
            (resources tagged `Environment=<profile.name>`) and says whether it scales down.
        :param monitoring: where alarms notify and widgets are drawn; its `reports_topic`
            receives the reports unless `reports_topic` is given.
        :param reports_topic: where reports and failures are sent. Default: the monitoring's.
        :param times: Default: `SchedulerTimes()` (weekdays 19:00 down, 07:00 up, report
            Wednesday 10:00, UTC).
        :param ebs_encryption_keys: customer managed KMS keys of the instances' EBS volumes:
            EC2 starts such an instance only if the caller may create a grant on the key
            (otherwise the start fails after the call returns). Default: none (the AWS
            managed key needs nothing).
        :param alarm_thresholds: of the function. Default: `AlarmThresholds()`.
        :param failed_resources_thresholds: resources a scale run could not change, per
            five minutes. Default: warning at 1.
        """
        super().__init__(scope, id)
        topic = reports_topic or (monitoring.reports_topic if monitoring is not None else None)
        if topic is None:
            raise PropsError(f"{self.node.path}: give monitoring or reports_topic for the reports")
        self.times = times or SchedulerTimes()
        try:
            self.times.check()
        except ValueError as error:
            raise PropsError(f"{self.node.path}: {error}") from None
        self.scales = profile.scale_down_off_hours
        if not self.scales and ebs_encryption_keys:
            raise PropsError(
                f"{self.node.path}: profile {profile.name!r} does not scale down off-hours, "
                "so ebs_encryption_keys would never be used"
            )
        self.profile = profile
        self.reports_topic = topic
        self.allowed_environments: tuple[str, ...] = (profile.name,) if self.scales else ()
        """What ALLOWED_ENVIRONMENTS holds: the profile's environment, or none."""

        self.function = OpsFunction(
            self,
            "Function",
            entry=FUNCTIONS_DIR / "env_scheduler",
            profile=profile,
            monitoring=monitoring,
            description=(
                f"Scales the {profile.name} environment down out of hours, reports idle instances"
                if self.scales
                else f"Reports the idle instances of the {profile.name} environment"
            ),
            service_name=SERVICE_NAME,
            environment={
                "SNS_TOPIC_ARN": topic.topic_arn,
                "ALLOWED_ENVIRONMENTS": ",".join(self.allowed_environments),
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            },
            layers=[common_layer(self), powertools_layer(self)],
            timeout=Duration.minutes(5),
            alarm_thresholds=alarm_thresholds,
            smoke_test_event={"action": "report", "environment": profile.name, "dry_run": True},
        )
        topic.grant_publish(self.function.role)
        acknowledge(
            self.function.role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to the KMS-encrypted reports topic: CDK's grant, on that topic's key only",
        )
        self.policy = iam.Policy(
            self, "Permissions", roles=[self.function.role], statements=self._reading()
        )
        """The function's permissions on EC2, Auto Scaling and CloudWatch (the function
        waits for it, so the first smoke test already has them)."""
        self.function.function.node.add_dependency(self.policy)
        acknowledge(
            self.policy,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeInstances, DescribeAutoScalingGroups and GetMetricData have no "
            "resource-level permissions",
        )

        self.report_schedule = self._schedule(
            "ReportSchedule",
            "report",
            self.times.cron(self.times.report_day, self.times.report_at),
            enabled=None,
        )
        self.scale_down_schedule: scheduler.Schedule | None = None
        self.scale_up_schedule: scheduler.Schedule | None = None
        self.failed_resources_alarms: dict[Severity, cloudwatch.Alarm] = {}
        if self.scales:
            scaling = self._scaling(ebs_encryption_keys)
            self.policy.add_statements(*scaling)
            acknowledge_wildcard_resources(
                self.policy,
                sorted({r for st in scaling for r in st.resources if r != "*" and r.endswith("*")}),
                "Instances and groups are chosen by their tags: every action on them is "
                "conditioned on the Environment tag (and AutoScale=true for instances)",
            )
            self.scale_down_schedule = self._schedule(
                "ScaleDownSchedule",
                "scale_down",
                self.times.cron(self.times.week_days, self.times.scale_down_at),
                enabled=True,
            )
            self.scale_up_schedule = self._schedule(
                "ScaleUpSchedule",
                "scale_up",
                self.times.cron(self.times.week_days, self.times.scale_up_at),
                enabled=True,
            )
            self.failed_resources_alarms = create_alarms(
                self,
                "FailedResources",
                metric=cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name="FailedResources",
                    dimensions_map={"service": SERVICE_NAME, "environment": profile.name},
                    statistic="Sum",
                    period=METRIC_PERIOD,
                ),
                thresholds=failed_resources_thresholds or {Severity.WARNING: 1},
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                description=(
                    f"{display_path(self)}: instances or groups a scale run left as they were"
                ),
                actions_enabled=profile.alarm_actions_enabled,
                monitoring=monitoring,
            )

    def _schedule(
        self,
        id: str,
        action: str,
        expression: scheduler.ScheduleExpression,
        *,
        enabled: bool | None,
    ) -> scheduler.Schedule:
        return self.function.add_schedule(
            id,
            ScheduleOptions(
                expression=expression,
                input={"action": action, "environment": self.profile.name},
                enabled=enabled,
                description=f"{action} of the {self.profile.name} environment",
            ),
        )

    def _reading(self) -> list[iam.PolicyStatement]:
        actions = ["ec2:DescribeInstances", "cloudwatch:GetMetricData"]
        if self.scales:
            actions.append("autoscaling:DescribeAutoScalingGroups")
        return [iam.PolicyStatement(actions=sorted(actions), resources=["*"])]

    def _scaling(self, keys: Sequence[kms.IKey]) -> list[iam.PolicyStatement]:
        """Each destructive action only on resources tagged with the allowed environment."""
        stack = Stack.of(self)
        instances = stack.format_arn(service="ec2", resource="instance", resource_name="*")
        groups = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name="*:autoScalingGroupName/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        environments = list(self.allowed_environments)
        in_environment = {f"autoscaling:ResourceTag/{ENVIRONMENT_TAG}": environments}
        statements = [
            iam.PolicyStatement(
                actions=["ec2:StartInstances", "ec2:StopInstances"],
                resources=[instances],
                conditions={
                    "StringEquals": {
                        f"aws:ResourceTag/{ENVIRONMENT_TAG}": environments,
                        f"aws:ResourceTag/{AUTOSCALE_TAG[0]}": AUTOSCALE_TAG[1],
                    }
                },
            ),
            iam.PolicyStatement(
                actions=["autoscaling:UpdateAutoScalingGroup"],
                resources=[groups],
                conditions={"StringEquals": in_environment},
            ),
            iam.PolicyStatement(
                actions=["autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"],
                resources=[groups],
                conditions={
                    "StringEquals": in_environment,
                    # ForAllValues is also true of a request without tag keys: require some.
                    "ForAllValues:StringEquals": {"aws:TagKeys": [SAVED_CAPACITY_TAG]},
                    "Null": {"aws:TagKeys": "false"},
                },
            ),
        ]
        if keys:
            statements.append(
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[key.key_arn for key in keys],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": True}},
                )
            )
        return statements
