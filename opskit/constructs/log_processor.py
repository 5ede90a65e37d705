"""LogProcessor: CloudWatch Logs subscriptions -> error metrics and rate-limited critical alerts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import jsii
from aws_cdk import Duration, Reference, Stack, Stage, Token, Tokenization
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as destinations
from aws_cdk import aws_sns as sns
from constructs import Construct, IConstruct, IValidation

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs import encrypted
from opskit.constructs.alarms import Severity, Thresholds, create_alarms
from opskit.constructs.compliance import acknowledge
from opskit.constructs.environments import known_to_depend, require_same_environment
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.monitoring import METRIC_PERIOD, Monitoring
from opskit.constructs.ops_function import (
    AlarmThresholds,
    OpsFunction,
    acknowledge_alias_permission,
)
from opskit.constructs.paths import display_path, path_in_stack, stage_path
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile
from opskit.references import reference

DEFAULT_METRIC_NAMESPACE = "CustomApp/Errors"
DEFAULT_MAX_DECOMPRESSED_BYTES = 10 * 1024 * 1024
SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}
"""Checks the processor's configuration after each deployment without processing logs."""

_MAX_PATTERN_ENV_BYTES = 3000
"""Lambda caps all environment variables of a function at 4 KB together; both pattern
lists share this much of it."""
_LOG_GROUP_NAME = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")


@dataclass(frozen=True)
class LogProcessorThresholds:
    """Alarm thresholds on what the processor counts, by severity (leave one out to drop it).

    Every alarm reads the environment's totals (dimension ``Environment``) per five minutes.
    """

    critical_lines: Thresholds = field(default_factory=lambda: {Severity.WARNING: 1})
    """Critical lines. Warning, not critical: each burst already pages through the alert
    with its sample lines; the alarm tracks the state (firing, recovered) on the dashboard."""
    malformed_payloads: Thresholds = field(default_factory=lambda: {Severity.WARNING: 1})
    """Deliveries that could not be read (each is also in the dead-letter queue, whose
    alarm is critical)."""
    error_lines: Thresholds = field(default_factory=dict)
    """Error lines. Default: no alarm (what is normal differs too much between services)."""


class LogProcessor(Construct):
    """Counts error and critical lines of CloudWatch Logs log groups and alerts on critical ones.

    Subscription filters deliver the log groups' events to the processor's alias; CloudWatch
    Logs may invoke exactly that alias, for exactly those log groups, from this account.
    The processor emits ``ErrorCount`` and ``CriticalCount`` per log group and per
    environment (``METRIC_NAMESPACE``), and publishes critical lines to the alert topic
    with samples, at most once per `alert_window` per log group: the windows are claimed
    in `rate_limit_table`, so concurrent sandboxes agree. Payloads it cannot read raise,
    count as ``MalformedPayloads`` and land in the dead-letter queue.

    It refuses to watch its own log group, or that of a function subscribed to its alert
    topic: either would feed its output back to itself. AWS allows two subscription
    filters per log group; a third fails the deployment.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None = None,
        alert_topic: sns.ITopic | None = None,
        log_groups: Sequence[str | logs.ILogGroup] = (),
        filter_pattern: logs.IFilterPattern | None = None,
        error_patterns: Sequence[str] | None = None,
        critical_patterns: Sequence[str] | None = None,
        metric_namespace: str = DEFAULT_METRIC_NAMESPACE,
        environment_name: str | None = None,
        alert_window: Duration | None = None,
        max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
        rate_limit_table: dynamodb.ITable | None = None,
        thresholds: LogProcessorThresholds | None = None,
        alarm_thresholds: AlarmThresholds | None = None,
        memory_size: int = 512,
        reserved_concurrency: int | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify and widgets are drawn; its critical topic
            receives the alerts unless `alert_topic` is given.
        :param alert_topic: where critical alerts go. Default: `monitoring.critical_topic`.
        :param log_groups: log groups to watch, by name or construct. Default: none (see
            `subscribe` and `watch_functions`).
        :param filter_pattern: which events the subscriptions deliver. Default: all events.
        :param error_patterns: regular expressions (case-insensitive) replacing the default
            error patterns. Default: the handler's (ERROR, FAILED, EXCEPTION, an HTTP 5xx
            status, Timeout, Connection ... failed).
        :param critical_patterns: the same for critical lines. Default: the handler's
            (Database ... connection ... failed, Out of memory, Disk ... full,
            Security ... violation, HTTP 500-505, Fatal).
        :param metric_namespace: Default: ``CustomApp/Errors``.
        :param environment_name: the ``Environment`` dimension value, which the alarms read.
            Default: the profile's name.
        :param alert_window: at most one alert per log group per window. Default: 15 minutes.
        :param max_decompressed_bytes: payloads inflating past this are rejected.
            Default: 10 MiB (a delivery is at most ~1 MB compressed).
        :param rate_limit_table: an existing table (partition key ``logGroup``, string;
            TTL attribute ``expiresAt``) for the alert windows. Default: a new one.
        :param thresholds: alarms on the counted lines. Default: `LogProcessorThresholds()`.
        :param alarm_thresholds: the function's own alarms. Default: `AlarmThresholds()`.
        :param memory_size: MiB; CPU grows with it, and matching is CPU-bound. Default: 512.
        :param reserved_concurrency: Default: the profile's.
        """
        super().__init__(scope, id)
        topic = alert_topic or (monitoring.critical_topic if monitoring else None)
        if topic is None:
            raise PropsError(f"{self.node.path}: give alert_topic or monitoring (for its topic)")
        window = alert_window or Duration.minutes(15)
        if window.to_seconds() < 60:
            raise PropsError(f"{self.node.path}: alert_window must be at least one minute")
        if max_decompressed_bytes < 1024 * 1024:
            raise PropsError(f"{self.node.path}: max_decompressed_bytes must be at least 1 MiB")
        self.profile = profile
        self.monitoring = monitoring
        self.alert_topic = topic
        self.metric_namespace = metric_namespace
        self.environment_name = environment_name or profile.name
        self.filter_pattern = filter_pattern or logs.FilterPattern.all_events()
        self.thresholds = thresholds or LogProcessorThresholds()

        environment = {
            "ALERT_TOPIC_ARN": topic.topic_arn,
            "METRIC_NAMESPACE": metric_namespace,
            "ENVIRONMENT_NAME": self.environment_name,
            "ALERT_WINDOW_SECONDS": str(int(window.to_seconds())),
            "MAX_DECOMPRESSED_BYTES": str(max_decompressed_bytes),
        }
        pattern_lists = {
            name: self._pattern_list(name, patterns)
            for name, patterns in (
                ("ERROR_PATTERNS", error_patterns),
                ("CRITICAL_PATTERNS", critical_patterns),
            )
            if patterns is not None
        }
        self._check_pattern_room(pattern_lists)
        environment.update(pattern_lists)

        self.rate_limit_table = rate_limit_table or self._table()
        environment["RATE_LIMIT_TABLE"] = self.rate_limit_table.table_name

        self.processor = OpsFunction(
            self,
            "Processor",
            entry=FUNCTIONS_DIR / "log_processor",
            profile=profile,
            monitoring=monitoring,
            description="Counts error and critical log lines; alerts on critical ones",
            service_name="log-processor",
            environment=environment,
            layers=[common_layer(self), powertools_layer(self)],
            memory_size=memory_size,
            timeout=Duration.seconds(30),
            # A delivery that fails once fails again: a malformed payload is deterministic,
            # and AWS errors are already retried inside the invocation. Retrying would count
            # its lines twice; the dead-letter queue keeps it for a redrive instead.
            retry_attempts=0,
            # Throttled deliveries wait in Lambda's queue; keep them through a long storm.
            max_event_age=Duration.hours(6),
            alarm_thresholds=alarm_thresholds,
            smoke_test_event=SMOKE_TEST_EVENT,
            reserved_concurrency=reserved_concurrency,
        )
        self.function = self.processor.function
        self.alias = self.processor.alias
        topic.grant_publish(self.function)
        if getattr(topic, "master_key", None) is not None:
            acknowledge(
                self.processor.role,
                "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
                "Publishing to the KMS-encrypted alert topic needs GenerateDataKey* on that "
                "topic's key alone (the grant Topic.grant_publish makes)",
            )
        self.rate_limit_table.grant(self.function, "dynamodb:UpdateItem")
        encrypted.allow_table_key_use(self.rate_limit_table, self.function)

        self.subscriptions: dict[str, logs.SubscriptionFilter] = {}
        """Subscription filters by the construct address of the watched log group."""
        self.watched: list[logs.ILogGroup] = []
        self._by_group_widget: cloudwatch.GraphWidget | None = None
        self._other_by_group_widgets: dict[str, cloudwatch.GraphWidget] = {}
        self._monitoring = monitoring
        self._permission: lambda_.CfnPermission | None = None
        self._names = _Names(self)
        self.alarms = self._alarms()
        if monitoring is not None:
            self._dashboard(monitoring)
        self.node.add_validation(_NoFeedback(self))
        for log_group in log_groups:
            self.subscribe(log_group)

    def subscribe(
        self, log_group: str | logs.ILogGroup, *, filter_pattern: logs.IFilterPattern | None = None
    ) -> logs.SubscriptionFilter:
        """Delivers `log_group`'s events (those matching `filter_pattern`, default the
        processor's) to the processor, and lets CloudWatch Logs invoke its alias for it."""
        group = self._log_group(log_group)
        self._require_reachable(group)
        return self._subscribe(group, filter_pattern, _loops(self))

    def _subscribe(
        self,
        group: logs.ILogGroup,
        filter_pattern: logs.IFilterPattern | None,
        loops: dict[str, str],
    ) -> logs.SubscriptionFilter:
        problem = _feedback(self, group, loops)
        if problem:
            raise PropsError(f"{self.node.path}: {problem}")
        key = self._key(group)
        if key in self.subscriptions:
            raise PropsError(
                f"{self.node.path}: log group {_describe(group)} is already subscribed"
            )
        elsewhere = self._subscribed_from_its_stack(group)
        subscription = logs.SubscriptionFilter(
            cast(Construct, group) if elsewhere else self,
            f"Subscription{_digest(stage_path(self))}" if elsewhere else f"Subscription{key}",
            log_group=group,
            destination=destinations.LambdaDestination(self.alias, add_permissions=False),
            filter_pattern=filter_pattern or self.filter_pattern,
        )
        subscription.node.add_dependency(self._invoke_permission())
        self.subscriptions[key] = subscription
        self.watched.append(group)
        widget = self._by_group_widget_for(group) if elsewhere else self._by_group_widget
        if widget is not None:
            dimensions = {"LogGroup": group.log_group_name}
            for name in ("ErrorCount", "CriticalCount"):
                widget.add_left_metric(self._metric(name, dimensions))
        return subscription

    def _in_own_stack(self, group: logs.ILogGroup) -> bool:
        return reference(self._names.stack_of(group)) == reference(self._names.stack)

    def _require_reachable(self, group: logs.ILogGroup) -> None:
        """Refuses, in one line, a group of another account or region: a subscription
        delivers to a function of its own account and region only."""
        if not self._in_own_stack(group):
            require_same_environment(
                self._names.stack_of(group),
                self._names.stack,
                cannot=f"its log group {_describe(group)} cannot reach {self.node.path}",
                fix="give each {what} a LogProcessor of its own",
            )

    def _subscribed_from_its_stack(self, group: logs.ILogGroup) -> bool:
        """Whether `group`'s filter belongs in the group's stack: a group of another stack,
        unless this stack is known to depend on that one (see `known_to_depend`)."""
        if self._in_own_stack(group):
            return False
        theirs = self._names.stack_of(group)
        return not known_to_depend(self._names.stack, theirs, monitoring=self._monitoring)

    def _key(self, group: logs.ILogGroup) -> str:
        """Eight hex digits naming the group: by its path within the stack, so that a
        subscription's logical id is the same whether a pipeline stage holds the stack or
        not; a group of another stack by that stack's id too, since paths repeat there. A
        group imported by its name is keyed as that name passed as a string is, so moving
        from one form to the other keeps the subscription: a new one beside the old would
        pass CloudWatch Logs' two subscriptions per group where the group has another."""
        if not self._in_own_stack(group):
            return _digest(stage_path(group))
        if not isinstance(group, logs.LogGroup):
            name = group.log_group_name
            if not Token.is_unresolved(name):
                return _digest(f"{path_in_stack(self)}/{_watched_id(name)}")
        return _digest(path_in_stack(group))

    def _by_group_widget_for(self, group: logs.ILogGroup) -> cloudwatch.GraphWidget | None:
        """The by-group graph on the dashboard of another stack's group: the processor's own
        dashboard naming that stack's log group would make each stack depend on the other."""
        if self._monitoring is None:
            return None
        dashboard = self._monitoring.dashboard_for(group)
        key = reference(dashboard)
        if key not in self._other_by_group_widgets:
            widget = _by_group_widget(f"{display_path(self)}: errors and critical lines")
            dashboard.add_widgets(widget)
            self._other_by_group_widgets[key] = widget
        return self._other_by_group_widgets[key]

    def _invoke_permission(self) -> lambda_.CfnPermission:
        """One permission for every subscription: CloudWatch Logs of this account may invoke
        the alias for its log groups. A statement per log group (~500 bytes, up to ~1 KB
        for long names) would outgrow the 20 KB resource-based policy Lambda allows; this
        is AWS's own form for account-wide subscriptions."""
        if self._permission is not None:
            return self._permission
        stack = Stack.of(self)
        permission = lambda_.CfnPermission(
            self,
            "LogsMayInvokeAlias",
            action="lambda:InvokeFunction",
            function_name=self.alias.function_arn,
            principal="logs.amazonaws.com",
            source_arn=f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*",
            source_account=stack.account,
        )
        acknowledge_alias_permission(permission)
        self._permission = permission
        return permission

    def watch_functions(self, scope: IConstruct) -> list[logs.SubscriptionFilter]:
        """Subscribes the log groups of every OpsFunction under `scope` (their smoke tests'
        too), except this processor's own and those of functions that receive its alerts,
        which would feed its output back to it."""
        found = []
        loops = _loops(self)
        for construct in scope.node.find_all():
            if not isinstance(construct, OpsFunction) or construct is self.processor:
                continue
            for group in (construct.log_group, construct.smoke_test_log_group):
                if group is None:
                    continue
                self._require_reachable(group)
                if self._key(group) not in self.subscriptions and not _feedback(self, group, loops):
                    found.append(self._subscribe(group, None, loops))
        return found

    def _log_group(self, log_group: str | logs.ILogGroup) -> logs.ILogGroup:
        if not isinstance(log_group, str):
            return log_group
        if not _LOG_GROUP_NAME.match(log_group):
            raise PropsError(f"{self.node.path}: {log_group!r} is not a log group name")
        id = _watched_id(log_group)
        if self.node.try_find_child(id) is not None:
            raise PropsError(f"{self.node.path}: log group {log_group!r} is already subscribed")
        return logs.LogGroup.from_log_group_name(self, id, log_group)

    def _pattern_list(self, name: str, patterns: Sequence[str]) -> str:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as error:
                raise PropsError(
                    f"{self.node.path}: {name.lower()}[{index}] {pattern!r} is not a valid "
                    f"regular expression: {error}"
                ) from None
        return json.dumps(list(patterns), separators=(",", ":"))

    def _check_pattern_room(self, pattern_lists: Mapping[str, str]) -> None:
        """Both pattern lists share the function's 4 KB of environment with its other
        variables (ARNs, names, Powertools' settings: under 1 KB)."""
        size = sum(len(encoded.encode()) for encoded in pattern_lists.values())
        if size > _MAX_PATTERN_ENV_BYTES:
            names = " and ".join(name.lower() for name in pattern_lists)
            raise PropsError(
                f"{self.node.path}: {names} take {size} bytes; Lambda allows 4 KB of "
                f"environment in all (keep the patterns under {_MAX_PATTERN_ENV_BYTES} together)"
            )

    def _table(self) -> dynamodb.Table:
        return encrypted.table(
            self,
            "AlertWindows",
            profile=self.profile,
            partition_key="logGroup",
            holds="when each log group last alerted, and counts: losing it costs at most "
            "one early alert",
            time_to_live_attribute="expiresAt",
        )

    def _metric(
        self, name: str, dimensions: Mapping[str, str] | None = None, *, label: str | None = None
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self.metric_namespace,
            metric_name=name,
            dimensions_map=dict(dimensions or {"Environment": self.environment_name}),
            statistic="Sum",
            period=METRIC_PERIOD,
            label=label,
        )

    def _alarms(self) -> dict[str, dict[Severity, cloudwatch.Alarm]]:
        what = {
            "critical_lines": ("CriticalCount", "critical log lines"),
            "malformed_payloads": (
                "MalformedPayloads",
                "subscription deliveries it could not read (kept in the dead-letter queue)",
            ),
            "error_lines": ("ErrorCount", "error log lines"),
        }
        return {
            key: create_alarms(
                self,
                "".join(part.title() for part in key.split("_")),
                metric=self._metric(metric),
                thresholds=getattr(self.thresholds, key),
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                description=f"{display_path(self)}: {description} in {self.environment_name}",
                actions_enabled=self.profile.alarm_actions_enabled,
                monitoring=self.monitoring,
            )
            for key, (metric, description) in what.items()
        }

    def _dashboard(self, monitoring: Monitoring) -> None:
        self._by_group_widget = _by_group_widget("Errors and critical lines by log group")
        monitoring.dashboard_for(self).add_widgets(
            cloudwatch.GraphWidget(
                title=f"Log lines ({self.environment_name})",
                left=[
                    self._metric("ErrorCount", label="errors"),
                    self._metric("CriticalCount", label="critical"),
                ],
                width=6,
                height=6,
            ),
            cloudwatch.GraphWidget(
                title="Malformed payloads",
                left=[self._metric("MalformedPayloads", label="malformed")],
                width=6,
                height=6,
            ),
            self._by_group_widget,
        )


def _watched_id(name: str) -> str:
    """The id of the group a processor imports for a log group named by a string."""
    return f"Watched{hashlib.sha256(name.encode()).hexdigest()[:8].upper()}"


def _digest(path: str) -> str:
    return hashlib.sha256(f"/{path}".encode()).hexdigest()[:8].upper()


def _by_group_widget(title: str) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, width=12, height=6)


def _describe(group: logs.ILogGroup) -> str:
    name = group.log_group_name
    return name if not name.startswith("${Token") else group.node.path


class _Names:
    """Names and ARNs as the processor's stack resolves them, each resolved once: they are
    compared across the whole tree, and each resolution is a round trip to the jsii runtime.

    A reference resolves to the same `Ref` in every stack that has a resource of that
    logical id, so one to a resource is qualified by the stack that makes it."""

    def __init__(self, processor: LogProcessor) -> None:
        self.stack = Stack.of(processor)
        self._values: dict[str, str] = {}
        self._groups: dict[str, str] = {}
        self._stacks: dict[str, Stack] = {}
        """Both by the log group's jsii reference."""

    def __call__(self, value: str) -> str:
        resolved = self._values.get(value)
        if resolved is None:
            resolved = json.dumps(self.stack.resolve(value), sort_keys=True)
            if not resolved.startswith('"'):
                token = Tokenization.reverse_string(value).first_token
                if isinstance(token, Reference):
                    resolved = f"{reference(Stack.of(token.target))}:{resolved}"
            self._values[value] = resolved
        return resolved

    def stack_of(self, group: logs.ILogGroup) -> Stack:
        key = reference(group)
        stack = self._stacks.get(key)
        if stack is None:
            stack = self._stacks[key] = Stack.of(group)
        return stack

    def of_group(self, group: logs.ILogGroup) -> str:
        """The group's name, or, where it is a reference, the reference and its stack."""
        key = reference(group)
        name = self._groups.get(key)
        if name is None:
            name = json.dumps(self.stack.resolve(group.log_group_name), sort_keys=True)
            if not name.startswith('"'):
                name = f"{reference(self.stack_of(group))}:{name}"
            self._groups[key] = name
        return name


def _loops(processor: LogProcessor) -> dict[str, str]:
    """The log groups whose watching would feed the processor's output back to it, by
    resolved name, with why: its own, and those of functions that receive its alerts."""
    own = processor.processor
    loops = {
        processor._names.of_group(group): "is the processor's own: its log lines "
        "would be processed again, without end"
        for group in (own.log_group, own.smoke_test_log_group)
        if group is not None
    }
    for function in _alert_receivers(processor):
        for group in (function.log_group, function.smoke_test_log_group):
            if group is not None:
                loops.setdefault(
                    processor._names.of_group(group),
                    f"belongs to {function.node.path}, which receives the processor's "
                    "alerts: each alert would make more log lines",
                )
    return loops


def _feedback(processor: LogProcessor, group: logs.ILogGroup, loops: dict[str, str]) -> str | None:
    """Why watching `group` would feed the processor's output back to it, if it would."""
    why = loops.get(processor._names.of_group(group))
    return f"log group {_describe(group)} {why}" if why else None


def _alert_receivers(processor: LogProcessor) -> list[OpsFunction]:
    """OpsFunctions subscribed (through their function or alias) to the alert topic, in any
    stack of the processor's stage (no reference crosses a stage)."""
    constructs = (Stage.of(processor) or processor.node.root).node.find_all()
    topic = processor._names(processor.alert_topic.topic_arn)
    endpoints = {
        processor._names(subscription.endpoint)  # type: ignore[arg-type]
        for subscription in constructs
        if isinstance(subscription, sns.CfnSubscription)
        and subscription.protocol == "lambda"
        and subscription.endpoint is not None
        and processor._names(subscription.topic_arn) == topic
    }
    if not endpoints:
        return []
    return [
        function
        for function in constructs
        if isinstance(function, OpsFunction)
        and {
            processor._names(function.function.function_arn),
            processor._names(function.alias.function_arn),
        }
        & endpoints
    ]


@jsii.implements(IValidation)
class _NoFeedback:
    """At synth time, after everything is built: a subscription to the alert topic added
    after a log group was watched would close the loop too."""

    def __init__(self, processor: LogProcessor) -> None:
        self.processor = processor

    def validate(self) -> list[str]:
        loops = _loops(self.processor)
        return [
            f"{self.processor.node.path}: {problem}"
            for group in self.processor.watched
            if (problem := _feedback(self.processor, group, loops))
        ]
