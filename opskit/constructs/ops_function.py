"""OpsFunction: the one construct every opskit Lambda function goes through."""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import Annotations, CfnDeletionPolicy, Duration
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
from constructs import Construct, IConstruct, IValidation

from opskit.bundling import FUNCTIONS_DIR, asset_code, function_name, unwrapped_bundling_errors
from opskit.constructs import encrypted
from opskit.constructs.alarms import Severity, Thresholds, create_alarms
from opskit.constructs.compliance import acknowledge, acknowledge_each
from opskit.constructs.encrypted import dead_letter_queue
from opskit.constructs.monitoring import METRIC_PERIOD, Monitoring, dead_letter_depth
from opskit.constructs.paths import (
    ALARM_DESCRIPTION,
    IAM_DESCRIPTION,
    LAMBDA_DESCRIPTION,
    SCHEDULE_DESCRIPTION,
    SECURITY_GROUP_DESCRIPTION,
    aws_text,
    display_path,
)
from opskit.constructs.per_stack import once_per_stack
from opskit.container_image import (
    PACKAGING_CONTEXT,
    LayerSource,
    Packaging,
    image_code,
    layer_source,
)
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

ARCHITECTURE = lambda_.Architecture.ARM_64
DEFAULT_TIMEOUT = Duration.seconds(30)
DEFAULT_MAX_EVENT_AGE = Duration.hours(1)
SMOKE_TEST_EXTRA_SECONDS = 30
"""The hook's timeout over its target's: the verdict must reach CodeDeploy after the invoke."""
SMOKE_TEST_EXTRA_TIME = Duration.seconds(SMOKE_TEST_EXTRA_SECONDS)
LAMBDA_TIMEOUT_SECONDS = 900
HOOK_EVENT_AGE = Duration.hours(1)
"""CodeDeploy fails a lifecycle hook it has not heard from within an hour: an invocation of
the hook delayed longer (throttled) would answer nobody."""
PER_MINUTE = Duration.minutes(1)
"""The period of the dead-letter and rollback alarms: a minute's delay is a minute lost."""

VERSIONING_FLAGS = ("@aws-cdk/aws-lambda:recognizeLayerVersion",)
"""CDK feature flags every OpsFunction needs, whatever the app sets: without this one (apps
made before CDK 2.27 lack it) a change to a layer alone publishes no version, so the alias
and CodeDeploy keep the old layer."""

FUNCTION_METADATA = "opskit:function"
"""Resource metadata naming the handler (`notification`, `user_service.api`): what
`make invoke` finds a function of the synthesized template by."""

VPC_NETWORKING_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
"""What Lambda needs to attach a function to a VPC, as AWS grants it (on `*`): Lambda
checks the role for these when it creates the function, before any ENI exists."""


def lambda_log_level(level: str) -> str:
    """What Lambda's own log filter is set to: the profile's level, but never above INFO.

    Lambda gives lines without a level (metrics printed in the embedded metric format,
    Powertools' included) the level INFO, and drops them below its threshold; a WARN
    profile would silently lose every metric. Powertools' logger takes Lambda's level over
    its own (POWERTOOLS_LOG_LEVEL), so a profile above INFO logs at INFO."""
    order = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    return level if order.index(level) <= order.index("INFO") else "INFO"


@functools.cache
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
    lost_async_failures: Thresholds = field(default_factory=lambda: {Severity.CRITICAL: 0})
    """Failed async events Lambda could not hand to the dead-letter queue (e.g. a record over
    the queue's size limit), over five minutes: those are lost."""
    deployment_errors_per_minute: float = 0
    """Errors of the version being deployed, per minute, above which CodeDeploy rolls back."""


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
    """Deliveries Scheduler retries before the event goes to the schedule's DLQ."""
    max_event_age: Duration = DEFAULT_MAX_EVENT_AGE
    """How long Scheduler keeps retrying one event."""
    description: str | None = None
    """Default: names the function and alias."""


def acknowledge_alias_permission(permission: IConstruct) -> None:
    """The serverless rules' finding on a permission to invoke an OpsFunction's alias: they
    look for an EventInvokeConfig beside the permission and miss the alias's own."""
    acknowledge(
        permission,
        "ES1007",
        "Async invocations of the alias are handled by its EventInvokeConfig: "
        "retries, maximum event age, on-failure SQS destination",
    )


class _Alias(lambda_.Alias):
    """The alias every invoker targets. Invokers (EventBridge, SNS, API Gateway) add their
    permission wherever they live in the tree; each is acknowledged as it is added (an
    override: one call per permission, where an aspect would visit every construct)."""

    def add_permission(self, id: str, **permission: Any) -> None:
        super().add_permission(id, **permission)
        scope = permission.get("scope") or self
        acknowledge_alias_permission(scope.node.find_child(id))

    add_permission.__signature__ = inspect.signature(  # type: ignore[attr-defined]
        lambda_.Alias.add_permission
    )
    """jsii passes the Permission struct as keywords to the parameters it sees."""


class OpsFunction(Construct):
    """A Lambda function with everything it needs to run safely in production.

    Out of a handler folder comes: the function (arm64, latest Python), its log
    group, a published version and an alias named after the environment
    (`DEV`, `STAGING`, `PROD`) that every invoker targets, a CodeDeploy
    deployment group that shifts traffic by the profile's strategy and rolls
    back when the new version errors, async failure handling into an
    encrypted dead-letter queue, warning and critical alarms, an optional
    schedule and post-traffic smoke test, and roles with only inline,
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
        packaging: Packaging | None = None,
    ) -> None:
        """
        :param entry: the handler folder (opskit's own are under `opskit.bundling.FUNCTIONS_DIR`).
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify and widgets are drawn. Default: alarms
            without actions, no dashboard row.
        :param handler: `module.function` inside the folder. Default: `app.lambda_handler`.
        :param description: Default: none.
        :param environment: extra environment variables. Default: none.
        :param memory_size: MiB. Default: 256.
        :param timeout: Default: 30 seconds.
        :param layers: extra layers. Default: none.
        :param service_name: Powertools service name. Default: the construct id.
        :param retry_attempts: async retries before the event goes to the DLQ (0-2). Default: 2.
        :param max_event_age: how long an async event may wait. Default: 1 hour.
        :param alarm_thresholds: Default: `AlarmThresholds()`.
        :param schedule: invoke the alias on a schedule (`schedule`); more with `add_schedule`.
            Default: no schedule.
        :param smoke_test_event: after traffic shifts, invoke the new version with this event
            and roll the deployment back if it errors. Default: no smoke test.
        :param reserved_concurrency: Default: the profile's.
        :param provisioned_concurrency: on the alias. Default: the profile's.
        :param vpc: run inside this VPC. Default: no VPC.
        :param vpc_subnets: Default: the VPC's private subnets with egress.
        :param security_groups: Default: a new security group (`security_group`).
        :param packaging: a zip asset, or a container image holding the layers' contents too
            (`Packaging.CONTAINER_IMAGE`). Default: what the `opskit:packaging` context of the
            tree gives this function's `name`, else zip.
        """
        super().__init__(scope, id)
        for flag in VERSIONING_FLAGS:
            self.node.set_context(flag, True)
        if not 0 <= retry_attempts <= 2:
            raise PropsError(f"{self.node.path}: retry_attempts must be 0-2, got {retry_attempts}")
        if vpc is None and (vpc_subnets is not None or security_groups is not None):
            raise PropsError(f"{self.node.path}: vpc_subnets and security_groups need a vpc")
        longest = LAMBDA_TIMEOUT_SECONDS - SMOKE_TEST_EXTRA_SECONDS
        if smoke_test_event is not None and timeout and timeout.to_seconds() > longest:
            raise PropsError(
                f"{self.node.path}: a smoke-tested function may time out after {longest:g} s at"
                f" most, got {timeout.to_seconds():g} s: its hook runs"
                f" {SMOKE_TEST_EXTRA_SECONDS} s longer, and Lambda allows"
                f" {LAMBDA_TIMEOUT_SECONDS} s"
            )

        self.profile = profile
        self.monitoring = monitoring
        self.entry = Path(entry)
        self.name = function_name(self.entry, handler)
        """The handler's short name (`notification`, `user_service.api`)."""
        self.packaging = packaging or self._configured_packaging(self.name)
        self.runtime = latest_python_runtime()
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.alarm_thresholds = alarm_thresholds or AlarmThresholds()
        self.alarms: dict[str, dict[Severity, cloudwatch.Alarm]] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        self._dead_letter_widget: cloudwatch.GraphWidget | None = None

        self.security_group: ec2.ISecurityGroup | None = None
        if vpc is not None and security_groups is None:
            self.security_group = ec2.SecurityGroup(
                self,
                "SecurityGroup",
                vpc=vpc,
                description=aws_text(f"opskit {id} function", SECURITY_GROUP_DESCRIPTION),
            )
            security_groups = [self.security_group]

        reserved = (
            profile.reserved_concurrency if reserved_concurrency is None else reserved_concurrency
        )
        provisioned = (
            profile.provisioned_concurrency
            if provisioned_concurrency is None
            else provisioned_concurrency
        )
        if reserved is not None and provisioned and provisioned > reserved:
            raise PropsError(
                f"{self.node.path}: provisioned concurrency {provisioned} exceeds the reserved "
                f"concurrency {reserved}; Lambda allows a function no more provisioned than "
                "reserved concurrency, and the deployment would fail"
            )
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
            reserved_concurrency=reserved,
            vpc=vpc,
            vpc_subnets=vpc_subnets
            or ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=security_groups,
            packaging=self.packaging,
        )
        if vpc is not None:
            self._allow_vpc_networking()

        self.dead_letter_queue = self.add_dead_letter_queue("DeadLetterQueue", label="async")
        self.version = self.function.current_version
        self.alias = _Alias(
            self,
            "Alias",
            alias_name=profile.alias_name,
            version=self.version,
            description=f"What every {profile.name} invoker targets",
            provisioned_concurrent_executions=provisioned,
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
            retry_attempts=retry_attempts,
            max_event_age=max_event_age or DEFAULT_MAX_EVENT_AGE,
        )
        self._add_invocation_alarms()

        self.smoke_test_event = dict(smoke_test_event) if smoke_test_event is not None else None
        """What the post-traffic hook invokes the alias with; a delivery pipeline's
        verification step sends it too."""
        self.smoke_test_function: lambda_.Function | None = None
        self.smoke_test_role: iam.Role | None = None
        self.smoke_test_log_group: logs.LogGroup | None = None
        if smoke_test_event is not None:
            self._add_smoke_test(smoke_test_event)
        self._add_deployment_group()

        self.schedule: scheduler.Schedule | None = None
        self.schedules: dict[str, scheduler.Schedule] = {}
        self.schedule_dead_letter_queue: sqs.Queue | None = None
        if schedule is not None:
            self.schedule = self.add_schedule("Schedule", schedule)

        if monitoring is not None:
            self._dead_letter_widget = monitoring.add_function(self)

    def add_dead_letter_queue(self, id: str, *, label: str) -> sqs.Queue:
        """An encrypted, SSL-only queue for events that could not reach or be handled by
        this function, with a depth alarm and a line on the dashboard; `label` names it
        in `dead_letter_queues` and `alarms` (`<label>_dead_letters`)."""
        if label in self.dead_letter_queues:
            raise PropsError(f"{self.node.path}: a dead-letter queue labelled {label!r} exists")
        queue = dead_letter_queue(self, id, profile=self.profile)
        self.dead_letter_queues[label] = queue
        self.alarms[f"{label}_dead_letters"] = create_alarms(
            self,
            f"{id}Depth",
            metric=queue.metric_approximate_number_of_messages_visible(
                period=PER_MINUTE, statistic="Maximum"
            ),
            thresholds=self.alarm_thresholds.dead_letter_messages,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description=f"{display_path(self)}: events waiting in the {label} dead-letter queue",
            actions_enabled=self.profile.alarm_actions_enabled,
            monitoring=self.monitoring,
        )
        if self._dead_letter_widget is not None:
            self._dead_letter_widget.add_left_metric(dead_letter_depth(queue, label))
        return queue

    @unwrapped_bundling_errors()
    def _lambda(
        self,
        id: str,
        *,
        entry: Path,
        environment: Mapping[str, str],
        timeout: Duration,
        description: str | None,
        handler: str = "app.lambda_handler",
        memory_size: int = 256,
        layers: Sequence[lambda_.ILayerVersion] = (),
        reserved_concurrency: int | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        packaging: Packaging = Packaging.ZIP,
    ) -> tuple[lambda_.Function, iam.Role, logs.LogGroup]:
        """A function with its own log group and an inline-policy role."""
        log_group = encrypted.log_group(self, f"{id}Logs", profile=self.profile)
        role = iam.Role(
            self,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=aws_text(
                f"{display_path(self)}/{id}: inline, resource-scoped permissions only",
                IAM_DESCRIPTION,
            ),
        )
        encrypted.allow_log_writes(log_group, role, profile=self.profile)
        if packaging is Packaging.ZIP:
            code: dict[str, Any] = {
                "runtime": self.runtime,
                "code": self._zip_code(entry),
                "handler": handler,
                "layers": list(layers),
            }
        else:
            code = {
                "runtime": lambda_.Runtime.FROM_IMAGE,
                "code": image_code(
                    entry,
                    handler=handler,
                    runtime=self.runtime,
                    architecture=ARCHITECTURE,
                    layers=[self._image_layer(layer) for layer in layers],
                ),
                "handler": lambda_.Handler.FROM_IMAGE,
                "layers": None,
            }
        function = lambda_.Function(
            self,
            id,
            architecture=ARCHITECTURE,
            **code,
            description=description,
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel[
                lambda_log_level(self.profile.log_level)
            ],
            system_log_level_v2=lambda_.SystemLogLevel.INFO,
            tracing=lambda_.Tracing.ACTIVE if self.profile.tracing else lambda_.Tracing.DISABLED,
            environment=dict(environment),
            memory_size=memory_size,
            timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=vpc,
            vpc_subnets=vpc_subnets if vpc else None,
            security_groups=list(security_groups) if security_groups else None,
        )
        resource = cast(lambda_.CfnFunction, function.node.default_child)
        resource.add_metadata(FUNCTION_METADATA, function_name(entry, handler))
        dead_letters = (
            "Async failures go to the SQS on-failure destination of the alias "
            "(EventInvokeConfig); synchronous callers receive their errors"
        )
        reasons = {
            "Serverless-LambdaDLQ": dead_letters,
            "CKV_AWS_116": dead_letters,
            "WS1004": "The log group, with its retention, is the function's LoggingConfig.LogGroup",
            "CKV_AWS_173": "Environment variables hold names and ARNs only; secrets stay in "
            "Secrets Manager",
        }
        if vpc is None:
            reasons["CKV_AWS_117"] = (
                "Reaches only AWS APIs and public webhooks; pass `vpc` to place it in one"
            )
        if reserved_concurrency is None:
            reasons["CKV_AWS_115"] = (
                "Reserving concurrency takes it from the account's pool (new accounts may have "
                "no room); set the profile's or the function's reserved_concurrency to cap it"
            )
        acknowledge_each(function, reasons)
        if self.profile.tracing:
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions",
            )
        return function, role, log_group

    def _zip_code(self, entry: Path) -> lambda_.Code:
        """One asset per handler folder and stack, however many functions run it (every
        smoke test does): CDK binds a Code to each function of a stack, and staging the
        folder again would only find the same hash."""
        return once_per_stack(
            self,
            f"code:{entry.resolve()}",
            lambda _: asset_code(entry, runtime=self.runtime, architecture=ARCHITECTURE),
        )

    def _configured_packaging(self, name: str) -> Packaging:
        configured = self.node.try_get_context(PACKAGING_CONTEXT) or {}
        value = configured.get(name, Packaging.ZIP.value) if isinstance(configured, dict) else None
        valid = [member.value for member in Packaging]
        if value not in valid:
            raise PropsError(
                f"{self.node.path}: context {PACKAGING_CONTEXT!r} must map function names to"
                f" {' or '.join(valid)}; for {name!r} it has {value!r}"
            )
        return Packaging(value)

    def _image_layer(self, layer: lambda_.ILayerVersion) -> LayerSource:
        """What an image holds in place of one of its layers: only opskit's are known."""
        source = layer_source(layer)
        if source is None:
            raise PropsError(
                f"{self.node.path}: a container image has no layers, and opskit can copy only"
                f" its own into one; put what {layer.node.path} holds in the handler folder's"
                " requirements, or package the function as a zip"
            )
        return source

    def _allow_vpc_networking(self) -> None:
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(VPC_NETWORKING_ACTIONS), resources=["*"])
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Lambda checks its VPC networking (ENI) actions on any resource at function creation",
        )

    def _add_invocation_alarms(self) -> None:
        alias = self.alias
        common: dict[str, Any] = {
            "actions_enabled": self.profile.alarm_actions_enabled,
            "monitoring": self.monitoring,
        }
        error_rate = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": alias.metric_errors(period=METRIC_PERIOD, statistic="Sum"),
                "invocations": alias.metric_invocations(period=METRIC_PERIOD, statistic="Sum"),
            },
            period=METRIC_PERIOD,
            label="Error rate (%)",
        )
        self.alarms["error_rate"] = create_alarms(
            self,
            "ErrorRate",
            metric=error_rate,
            thresholds=self.alarm_thresholds.error_rate_percent,
            description=f"{display_path(self)}: error rate (%) of the {alias.alias_name} alias",
            **common,
        )
        timeout_ms = self.timeout.to_milliseconds()
        self.alarms["duration"] = create_alarms(
            self,
            "Duration",
            metric=alias.metric_duration(period=METRIC_PERIOD, statistic="p99"),
            thresholds={
                severity: timeout_ms * percent / 100
                for severity, percent in self.alarm_thresholds.duration_percent_of_timeout.items()
            },
            description=f"{display_path(self)}: p99 duration (ms) near the timeout",
            evaluation_periods=3,
            datapoints_to_alarm=2,
            **common,
        )
        self.alarms["throttles"] = create_alarms(
            self,
            "Throttles",
            metric=alias.metric_throttles(period=METRIC_PERIOD, statistic="Sum"),
            thresholds=self.alarm_thresholds.throttles,
            description=f"{display_path(self)}: throttled invocations",
            **common,
        )
        self.alarms["lost_async_failures"] = create_alarms(
            self,
            "LostAsyncFailures",
            metric=alias.metric(
                "DestinationDeliveryFailures", period=METRIC_PERIOD, statistic="Sum"
            ),
            thresholds=self.alarm_thresholds.lost_async_failures,
            description=(
                f"{display_path(self)}: failed async events not delivered to the dead-letter queue"
            ),
            **common,
        )

    def _add_smoke_test(self, event: Mapping[str, Any]) -> None:
        """The post-traffic hook: invokes the alias (now the new version) with `event`."""
        function, role, log_group = self._lambda(
            "SmokeTest",
            entry=FUNCTIONS_DIR / "smoke_test",
            description=aws_text(
                f"Post-traffic smoke test of {display_path(self)}", LAMBDA_DESCRIPTION
            ),
            environment={
                "TARGET_FUNCTION_NAME": self.function.function_name,
                "TARGET_QUALIFIER": self.alias.alias_name,
                "TEST_EVENT": json.dumps(event, sort_keys=True),
            },
            timeout=self.timeout.plus(SMOKE_TEST_EXTRA_TIME),
            memory_size=128,
            packaging=self._configured_packaging("smoke_test"),
        )
        # CodeDeploy invokes the hook asynchronously: a retry after a reported verdict would
        # run the smoke test again for a hook that has been answered.
        function.configure_async_invoke(retry_attempts=0, max_event_age=HOOK_EVENT_AGE)
        acknowledge(
            function,
            "Serverless-LambdaAsyncFailureDestination",
            "The hook's only output is its verdict to CodeDeploy; a hook that fails to answer "
            "fails the deployment at its timeout, which rolls it back",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[f"{self.function.function_arn}:{self.alias.alias_name}"],
            )
        )
        self.smoke_test_function, self.smoke_test_role, self.smoke_test_log_group = (
            function,
            role,
            log_group,
        )

    def _add_deployment_group(self) -> None:
        """CodeDeploy shifts the alias and rolls back when the new version errors.

        Rollback watches the new version alone (`ExecutedVersion`), per minute: an
        alias-wide error rate barely moves while a canary takes 10% of traffic. Each
        version gets an alarm of its own, named after it: AlarmName is create-only, so a
        new version replaces the alarm, and the new one starts in INSUFFICIENT_DATA.
        An alarm updated in place would keep its state (PutMetricAlarm does not reset
        it), and an ALARM left by a broken live version would roll back its own fix.
        """
        alias_name = self.alias.alias_name
        self.rollback_alarm = cloudwatch.Alarm(
            self,
            "DeploymentErrorsAlarm",
            alarm_name=(
                f"{self.function.function_name}-{alias_name}-v{self.version.version}"
                "-deployment-errors"
            ),
            metric=cloudwatch.Metric(
                namespace="AWS/Lambda",
                metric_name="Errors",
                dimensions_map={
                    "FunctionName": self.function.function_name,
                    "Resource": f"{self.function.function_name}:{alias_name}",
                    "ExecutedVersion": self.version.version,
                },
                statistic="Sum",
                period=PER_MINUTE,
            ),
            threshold=self.alarm_thresholds.deployment_errors_per_minute,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=aws_text(
                f"[DEPLOYMENT] {display_path(self)}: errors of the version being deployed; "
                "CodeDeploy rolls back on it",
                ALARM_DESCRIPTION,
            ),
        )
        self.node.add_validation(_RollbackAlarmsGo(self))
        self.deployment_role = iam.Role(
            self,
            "DeploymentRole",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=aws_text(
                f"CodeDeploy for {display_path(self)}: shifts the alias, reads its alarm",
                IAM_DESCRIPTION,
            ),
        )
        statements = [
            iam.PolicyStatement(
                actions=[
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:GetProvisionedConcurrencyConfig",
                ],
                resources=[
                    self.function.function_arn,
                    f"{self.function.function_arn}:{alias_name}",
                ],
            ),
            iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=["*"]),
        ]
        acknowledge(
            self.deployment_role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:DescribeAlarms (read-only) on *, as AWS's own CodeDeploy policy grants "
            "it: a denied alarm poll fails every deployment, and no evidence shows CodeDeploy's "
            "call authorises against the alarm ARN",
        )
        if self.smoke_test_function is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"],
                    resources=[self.smoke_test_function.function_arn],
                )
            )
        for statement in statements:
            self.deployment_role.add_to_policy(statement)
        # CDK attaches AWSCodeDeployRoleForLambdaLimited to a mutable role, and grants the
        # hook through it; the statements above replace both.
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            alias=self.alias,
            deployment_config=self.profile.deployment_strategy.deployment_config(),
            alarms=[self.rollback_alarm],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            role=self.deployment_role.without_policy_updates(),
            post_hook=self.smoke_test_function,
        )
        # The alias update is the deployment: CodeDeploy's permissions, the new version's
        # alarm and the deployment group that watches it must all be in place first.
        self.alias.node.add_dependency(
            self.deployment_role, self.rollback_alarm, self.deployment_group
        )

    def add_schedule(self, id: str, options: ScheduleOptions) -> scheduler.Schedule:
        """Another EventBridge Scheduler schedule on the alias, kept in `schedules` by `id`.

        Every schedule of the function shares `schedule_dead_letter_queue` (created with the
        first), so one alarm covers all of them.
        """
        if self.schedule_dead_letter_queue is None:
            self.schedule_dead_letter_queue = self.add_dead_letter_queue(
                "ScheduleDeadLetterQueue", label="schedule"
            )
        schedule = scheduler.Schedule(
            self,
            id,
            schedule=options.expression,
            description=aws_text(
                options.description or f"Invokes {display_path(self)} ({self.alias.alias_name})",
                SCHEDULE_DESCRIPTION,
            ),
            enabled=self.profile.schedules_enabled if options.enabled is None else options.enabled,
            target=scheduler_targets.LambdaInvoke(
                self.alias,
                input=(
                    None
                    if options.input is None
                    else scheduler.ScheduleTargetInput.from_object(dict(options.input))
                ),
                dead_letter_queue=self.schedule_dead_letter_queue,
                retry_attempts=options.retry_attempts,
                max_event_age=options.max_event_age,
            ),
        )
        self.schedules[id] = schedule
        return schedule


@jsii.implements(IValidation)
class _RollbackAlarmsGo:
    """At synth, after Aspects: a rollback alarm kept on replacement (a retain-everything
    Aspect does that) stays behind at every deployment of a new version, one alarm's
    monthly cost each. A warning, not an error: nothing fails."""

    def __init__(self, function: OpsFunction) -> None:
        self.function = function

    def validate(self) -> list[str]:
        alarm = self.function.rollback_alarm
        resource = cast(cloudwatch.CfnAlarm, alarm.node.default_child)
        if resource.cfn_options.update_replace_policy == CfnDeletionPolicy.RETAIN:
            Annotations.of(alarm).add_warning_v2(
                "opskit:retained-rollback-alarm",
                "Each version's rollback alarm is retained on replacement (a removal-policy "
                "Aspect?), so every deployment leaves one behind: leave it out of the Aspect",
            )
        return []
