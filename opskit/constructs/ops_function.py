"""OpsFunction: the one construct every opskit Lambda function goes through."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR, asset_code
from opskit.constructs.alarms import Severity, Thresholds, create_alarms
from opskit.constructs.compliance import acknowledge
from opskit.constructs.monitoring import Monitoring
from opskit.profile import EnvironmentProfile

ARCHITECTURE = lambda_.Architecture.ARM_64

VPC_NETWORKING_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
"""What Lambda needs to attach a function to a VPC; EC2 offers no resource-level scoping here."""


class OpsFunctionError(ValueError):
    """OpsFunction was given a combination of props it cannot build."""


def latest_python_runtime() -> lambda_.Runtime:
    """The newest Python runtime the installed aws-cdk-lib knows."""
    versions = {
        tuple(int(part) for part in name.split("_")[1:]): name
        for name in dir(lambda_.Runtime)
        if re.fullmatch(r"PYTHON_3_\d+", name)
    }
    return getattr(lambda_.Runtime, versions[max(versions)])  # type: ignore[no-any-return]


@dataclass(frozen=True)
class AlarmThresholds:
    """Alarm thresholds by severity; leave a severity out to drop that alarm."""

    error_rate_percent: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 5, Severity.CRITICAL: 10}
    )
    """Errors as a percentage of invocations over five minutes."""
    duration_percent_of_timeout: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 50, Severity.CRITICAL: 80}
    )
    """p99 duration as a percentage of the function's timeout."""
    throttles: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 10, Severity.CRITICAL: 50}
    )
    """Throttled invocations over five minutes."""
    dead_letter_messages: Thresholds = field(default_factory=lambda: {Severity.CRITICAL: 1})
    """Messages waiting in a dead-letter queue."""


@dataclass(frozen=True)
class ScheduleOptions:
    """When EventBridge Scheduler invokes the function's alias, and with what."""

    expression: scheduler.ScheduleExpression
    """Cron or rate; cron expressions may carry a time zone."""
    input: Mapping[str, Any] | None = None
    """The event the function receives. Default: Scheduler's own event."""
    enabled: bool | None = None
    """Default: the profile's `schedules_enabled`."""
    retry_attempts: int = 2
    max_event_age: Duration = field(default_factory=lambda: Duration.hours(1))
    description: str | None = None


class OpsFunction(Construct):
    """A Lambda function with everything it needs to run safely in production.

    Out of a handler folder comes: the function (arm64, latest Python), its log
    group, a published version and an alias named after the environment
    (`DEV`, `STAGING`, `PROD`) that every invoker targets, a CodeDeploy
    deployment group that shifts traffic by the profile's strategy and rolls
    back on the critical error-rate alarm, async failure handling into an
    encrypted dead-letter queue, warning and critical alarms, an optional
    schedule and post-traffic smoke test, and a role with only inline,
    resource-scoped permissions.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        entry: str | Path,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None = None,
        handler: str = "app.lambda_handler",
        description: str | None = None,
        environment: Mapping[str, str] | None = None,
        memory_size: int = 256,
        timeout: Duration | None = None,
        layers: Sequence[lambda_.ILayerVersion] = (),
        service_name: str | None = None,
        retry_attempts: int = 2,
        max_event_age: Duration | None = None,
        alarm_thresholds: AlarmThresholds | None = None,
        schedule: ScheduleOptions | None = None,
        smoke_test_event: Mapping[str, Any] | None = None,
        reserved_concurrency: int | None = None,
        provisioned_concurrency: int | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
    ) -> None:
        """
        :param entry: the handler folder; a name alone means `opskit/functions/<name>`.
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify and widgets are drawn. Default: alarms
            without actions, no dashboard row.
        :param handler: `module.function` inside the folder. Default: `app.lambda_handler`.
        :param environment: extra environment variables.
        :param memory_size: MiB. Default: 256.
        :param timeout: Default: 30 seconds.
        :param layers: extra layers.
        :param service_name: Powertools service name. Default: the construct id.
        :param retry_attempts: async retries before the event goes to the DLQ (0-2). Default: 2.
        :param max_event_age: how long an async event may wait. Default: 1 hour.
        :param alarm_thresholds: Default: `AlarmThresholds()`.
        :param schedule: invoke the alias on a schedule. Default: no schedule.
        :param smoke_test_event: after traffic shifts, invoke the new version with this event
            and roll the deployment back if it errors. Default: no smoke test.
        :param reserved_concurrency: Default: the profile's.
        :param provisioned_concurrency: on the alias. Default: the profile's.
        :param vpc: run inside this VPC (private subnets and a new security group unless
            given). Default: no VPC.
        """
        super().__init__(scope, id)
        if not 0 <= retry_attempts <= 2:
            raise OpsFunctionError(
                f"{self.node.path}: retry_attempts must be 0-2, got {retry_attempts}"
            )
        if vpc is None and (vpc_subnets is not None or security_groups is not None):
            raise OpsFunctionError(f"{self.node.path}: vpc_subnets and security_groups need a vpc")

        self.profile = profile
        self.monitoring = monitoring
        self.entry = (
            FUNCTIONS_DIR / entry if isinstance(entry, str) and "/" not in entry else Path(entry)
        )
        self.runtime = latest_python_runtime()
        self.timeout = timeout or Duration.seconds(30)
        thresholds = alarm_thresholds or AlarmThresholds()

        self.dead_letter_queue = self._dead_letter_queue("DeadLetterQueue")
        self.dead_letter_queues: dict[str, sqs.Queue] = {"async": self.dead_letter_queue}

        self.security_group: ec2.ISecurityGroup | None = None
        if vpc is not None and security_groups is None:
            self.security_group = ec2.SecurityGroup(
                self,
                "SecurityGroup",
                vpc=vpc,
                description=f"opskit {id} function",
                allow_all_outbound=True,
            )
            security_groups = [self.security_group]

        self.function, self.role, self.log_group = self._lambda(
            "Function",
            entry=self.entry,
            handler=handler,
            description=description,
            environment={
                "POWERTOOLS_SERVICE_NAME": service_name or id,
                "POWERTOOLS_LOG_LEVEL": profile.log_level,
                **(environment or {}),
            },
            memory_size=memory_size,
            timeout=self.timeout,
            layers=layers,
            reserved_concurrency=(
                reserved_concurrency
                if reserved_concurrency is not None
                else profile.reserved_concurrency
            ),
            vpc=vpc,
            vpc_subnets=vpc_subnets
            or (
                ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS) if vpc else None
            ),
            security_groups=security_groups,
        )
        if vpc is not None:
            self._allow_vpc_networking()

        self.version = self.function.current_version
        self.alias = lambda_.Alias(
            self,
            "Alias",
            alias_name=profile.alias_name,
            version=self.version,
            description=f"What every {profile.name} invoker targets",
            provisioned_concurrent_executions=(
                provisioned_concurrency
                if provisioned_concurrency is not None
                else profile.provisioned_concurrency
            ),
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
            retry_attempts=retry_attempts,
            max_event_age=max_event_age or Duration.hours(1),
        )

        self.alarms = self._alarms(thresholds)
        self.rollback_alarm = self.alarms["error_rate"][Severity.CRITICAL]

        self.smoke_test_function: lambda_.Function | None = None
        if smoke_test_event is not None:
            self.smoke_test_function = self._smoke_test(smoke_test_event)
        self.deployment_group = self._deployment_group()

        self.schedule: scheduler.Schedule | None = None
        self.schedule_dead_letter_queue: sqs.Queue | None = None
        if schedule is not None:
            self._schedule(schedule, thresholds)

        if monitoring is not None:
            monitoring.add_function(self)

    def _lambda(
        self,
        id: str,
        *,
        entry: Path,
        handler: str = "app.lambda_handler",
        environment: Mapping[str, str],
        timeout: Duration,
        description: str | None = None,
        memory_size: int = 256,
        layers: Sequence[lambda_.ILayerVersion] = (),
        reserved_concurrency: int | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
    ) -> tuple[lambda_.Function, iam.Role, logs.LogGroup]:
        log_group = logs.LogGroup(
            self,
            f"{id}Logs",
            retention=self.profile.log_retention,
            removal_policy=self.profile.removal_policy,
        )
        role = iam.Role(
            self,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"opskit {self.node.path}/{id}: inline, resource-scoped permissions only",
        )
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            id,
            runtime=self.runtime,
            architecture=ARCHITECTURE,
            code=asset_code(entry, runtime=self.runtime, architecture=ARCHITECTURE),
            handler=handler,
            description=description,
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel[self.profile.log_level],
            system_log_level_v2=lambda_.SystemLogLevel.INFO,
            tracing=lambda_.Tracing.ACTIVE if self.profile.tracing else lambda_.Tracing.DISABLED,
            environment=dict(environment),
            memory_size=memory_size,
            timeout=timeout,
            layers=list(layers),
            reserved_concurrent_executions=reserved_concurrency,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=list(security_groups) if security_groups else None,
        )
        acknowledge(
            function,
            "Serverless-LambdaDLQ",
            "Async failures go to the SQS on-failure destination of the alias (EventInvokeConfig); "
            "synchronous callers receive their errors",
        )
        if self.profile.tracing:
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions",
            )
        return function, role, log_group

    def _dead_letter_queue(self, id: str) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=self.profile.removal_policy,
        )
        for rule in ("AwsSolutions-SQS3", "Serverless-SQSRedrivePolicy"):
            acknowledge(
                queue, rule, "This queue is itself a dead-letter queue; its depth is alarmed"
            )
        return queue

    def _allow_vpc_networking(self) -> None:
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(VPC_NETWORKING_ACTIONS), resources=["*"])
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Lambda's VPC networking (ENI) actions have no resource-level permissions",
        )

    def _alarms(self, thresholds: AlarmThresholds) -> dict[str, dict[Severity, cloudwatch.Alarm]]:
        period = Duration.minutes(5)
        alias = self.alias
        error_rate = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": alias.metric_errors(period=period, statistic="Sum"),
                "invocations": alias.metric_invocations(period=period, statistic="Sum"),
            },
            period=period,
            label="Error rate (%)",
        )
        timeout_ms = self.timeout.to_milliseconds()
        duration_thresholds = {
            severity: timeout_ms * percent / 100
            for severity, percent in thresholds.duration_percent_of_timeout.items()
        }
        common: dict[str, Any] = {
            "actions_enabled": self.profile.alarm_actions_enabled,
            "monitoring": self.monitoring,
        }
        alarms = {
            "error_rate": create_alarms(
                self,
                "ErrorRate",
                metric=error_rate,
                thresholds=thresholds.error_rate_percent,
                description=f"{self.node.path}: error rate (%) of the {alias.alias_name} alias",
                **common,
            ),
            "duration": create_alarms(
                self,
                "Duration",
                metric=alias.metric_duration(period=period, statistic="p99"),
                thresholds=duration_thresholds,
                description=f"{self.node.path}: p99 duration (ms) near the timeout",
                evaluation_periods=3,
                datapoints_to_alarm=2,
                **common,
            ),
            "throttles": create_alarms(
                self,
                "Throttles",
                metric=alias.metric_throttles(period=period, statistic="Sum"),
                thresholds=thresholds.throttles,
                description=f"{self.node.path}: throttled invocations",
                **common,
            ),
            "dead_letters": self._queue_depth_alarms(
                "DeadLetters", self.dead_letter_queue, thresholds, common
            ),
        }
        if Severity.CRITICAL not in alarms["error_rate"]:
            raise OpsFunctionError(
                f"{self.node.path}: error_rate_percent needs a CRITICAL threshold; "
                "deployments roll back on it"
            )
        return alarms

    def _queue_depth_alarms(
        self, id: str, queue: sqs.Queue, thresholds: AlarmThresholds, common: dict[str, Any]
    ) -> dict[Severity, cloudwatch.Alarm]:
        return create_alarms(
            self,
            id,
            metric=queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            thresholds=thresholds.dead_letter_messages,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description=f"{self.node.path}: events waiting in a dead-letter queue",
            **common,
        )

    def _smoke_test(self, event: Mapping[str, Any]) -> lambda_.Function:
        function, role, _ = self._lambda(
            "SmokeTest",
            entry=FUNCTIONS_DIR / "smoke_test",
            description=f"Post-traffic smoke test of {self.node.path}",
            environment={
                "TARGET_FUNCTION_NAME": self.function.function_name,
                "TARGET_QUALIFIER": self.alias.alias_name,
                "TEST_EVENT": json.dumps(event, sort_keys=True),
            },
            timeout=self.timeout.plus(Duration.seconds(30)),
            memory_size=128,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[f"{self.function.function_arn}:{self.alias.alias_name}"],
            )
        )
        return function

    def _deployment_group(self) -> codedeploy.LambdaDeploymentGroup:
        self.deployment_role = iam.Role(
            self,
            "DeploymentRole",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=f"CodeDeploy for {self.node.path}: shifts the alias, reads its alarms",
        )
        alias_arn = f"{self.function.function_arn}:{self.alias.alias_name}"
        self.deployment_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:GetProvisionedConcurrencyConfig",
                ],
                resources=[self.function.function_arn, alias_arn],
            )
        )
        self.deployment_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[self.rollback_alarm.alarm_arn],
            )
        )
        if self.smoke_test_function is not None:
            self.deployment_role.add_to_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"],
                    resources=[self.smoke_test_function.function_arn],
                )
            )
        # CDK attaches AWSCodeDeployRoleForLambdaLimited to any mutable role it is given.
        group = codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            alias=self.alias,
            deployment_config=self.profile.deployment_strategy.deployment_config(),
            alarms=[self.rollback_alarm],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            role=self.deployment_role.without_policy_updates(),
        )
        if self.smoke_test_function is not None:
            group.add_post_hook(self.smoke_test_function)
            self.smoke_test_function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["codedeploy:PutLifecycleEventHookExecutionStatus"],
                    resources=[group.deployment_group_arn],
                )
            )
        return group

    def _schedule(self, options: ScheduleOptions, thresholds: AlarmThresholds) -> None:
        self.schedule_dead_letter_queue = self._dead_letter_queue("ScheduleDeadLetterQueue")
        self.dead_letter_queues["schedule"] = self.schedule_dead_letter_queue
        self.alarms["schedule_dead_letters"] = self._queue_depth_alarms(
            "ScheduleDeadLetters",
            self.schedule_dead_letter_queue,
            thresholds,
            {"actions_enabled": self.profile.alarm_actions_enabled, "monitoring": self.monitoring},
        )
        enabled = self.profile.schedules_enabled if options.enabled is None else options.enabled
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            schedule=options.expression,
            description=options.description
            or f"Invokes {self.node.path} ({self.alias.alias_name})",
            enabled=enabled,
            target=scheduler_targets.LambdaInvoke(
                self.alias,
                input=(
                    scheduler.ScheduleTargetInput.from_object(dict(options.input))
                    if options.input is not None
                    else None
                ),
                dead_letter_queue=self.schedule_dead_letter_queue,
                retry_attempts=options.retry_attempts,
                max_event_age=options.max_event_age,
            ),
        )
