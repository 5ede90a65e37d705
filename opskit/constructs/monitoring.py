"""Alert topics by severity and one operations dashboard per environment (and per stack of
its constructs, where they live in other stacks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from opskit.constructs.alarms import Severity, create_alarms
from opskit.constructs.encrypted import dead_letter_queue
from opskit.constructs.environments import for_this_account, require_same_environment
from opskit.constructs.key_guard import guard_keys
from opskit.constructs.paths import display_path, id_of, stage_path
from opskit.constructs.per_stack import once_per_stack
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile
from opskit.references import cached_by_reference, reference

METRIC_PERIOD = Duration.minutes(5)
"""The period of every severity alarm and dashboard graph, so the two agree."""
DASHBOARD_SPAN = Duration.hours(3)
DASHBOARD_NAME_MAX = 255

PUBLISHERS = {
    "cloudwatch.amazonaws.com": True,
    "budgets.amazonaws.com": False,
    "events.amazonaws.com": False,
}
"""Services that publish to the alert topics, and so may use the topics' key; whether their
requests to KMS are known to carry `aws:SourceAccount` (CloudWatch's are). Where they are
not, the key takes none, as a condition the request lacks would drop every alert silently:
Budgets (the topic's policy, conditioned as Budgets' guide documents, keeps other accounts
out) and EventBridge (whose guide says topic policies for it take no conditions)."""


class MonitoredFunction(IConstruct, Protocol):
    """What a dashboard row is drawn from: `OpsFunction`."""

    @property
    def alias(self) -> lambda_.Alias: ...

    @property
    def dead_letter_queues(self) -> Mapping[str, sqs.IQueue]: ...


class Monitoring(Construct):
    """Where every opskit construct sends its alarms and draws its widgets.

    Creates an encrypted SNS topic per severity (the key lets CloudWatch, AWS Budgets
    and EventBridge publish), a reports topic for the functions' run reports, e-mail
    subscriptions, a dashboard with a row per registered function, and a critical alert
    when a KMS key of its stack is disabled or scheduled for deletion (`key_guard`).

    Constructs of other stacks may use it: their alarms notify its topics, and they draw
    on a dashboard of their own stack (`dashboard_for`). Their stacks' keys are not
    watched: give such a stack a `Monitoring` of its own to watch them.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        alert_emails: Sequence[str] = (),
        critical_alert_emails: Sequence[str] | None = None,
        report_emails: Sequence[str] = (),
        dashboard_name: str | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param alert_emails: addresses subscribed to every severity. Default: none.
        :param critical_alert_emails: addresses for critical alerts only, instead of
            `alert_emails`. Default: `alert_emails`.
        :param report_emails: addresses subscribed to `reports_topic`. Default: none.
        :param dashboard_name: the dashboard's name, unique in the account (dashboards have
            no region). Default: `opskit-<environment>-<region>`.
        """
        super().__init__(scope, id)
        self.profile = profile
        self.key = kms.Key(
            self,
            "AlertsKey",
            description=f"Encrypts opskit {profile.name} alert topics",
            enable_key_rotation=True,
            removal_policy=profile.removal_policy,
        )
        stack = Stack.of(self)
        account = stack.account
        for service, sends_source_account in PUBLISHERS.items():
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal(service)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],
                    conditions=(
                        {"StringEquals": {"aws:SourceAccount": account}}
                        if sends_source_account
                        else None
                    ),
                )
            )

        emails = {
            Severity.WARNING: list(alert_emails),
            Severity.CRITICAL: list(
                alert_emails if critical_alert_emails is None else critical_alert_emails
            ),
        }
        self.undelivered_alerts = dead_letter_queue(self, "UndeliveredAlerts", profile=profile)
        self.topics: dict[Severity, sns.Topic] = {}
        for severity in Severity:
            topic = self._topic(
                f"{severity.value.title()}Topic",
                display_name=f"opskit {profile.name} {severity.value} alerts",
                emails=emails[severity],
            )
            topic.add_to_resource_policy(
                for_this_account(
                    "cloudwatch.amazonaws.com",
                    actions=["sns:Publish"],
                    resource=topic.topic_arn,
                    account=account,
                    source_arn=f"arn:{stack.partition}:cloudwatch:{stack.region}:{account}:alarm:*",
                )
            )
            self.topics[severity] = topic
        self.key_guard = guard_keys(
            self, topic=self.critical_topic, undelivered=self.undelivered_alerts, profile=profile
        )
        """Tells the critical topic when a KMS key of this stack is disabled or scheduled for
        deletion."""
        self.reports_topic = self._topic(
            "ReportsTopic",
            display_name=f"opskit {profile.name} reports",
            emails=list(report_emails),
        )
        """Run reports of the operational functions (backups, cleanups, schedules): for reading,
        not for paging anyone."""

        self.dashboard_name = dashboard_name or f"opskit-{profile.name}-{stack.region}"
        self.dashboard = _dashboard(self, "Dashboard", self.dashboard_name)
        self._stack = stack
        self.alarms: list[cloudwatch.Alarm] = []
        self._actions: dict[Severity, cloudwatch_actions.SnsAction] = {}
        self.dashboard.add_widgets(
            _graph(
                "Undelivered alerts",
                [dead_letter_depth(self.undelivered_alerts, "undelivered alerts")],
                width=24,
            )
        )
        [self.undelivered_alerts_alarm] = create_alarms(
            self,
            "UndeliveredAlerts",
            metric=self.undelivered_alerts.metric_approximate_number_of_messages_visible(
                period=METRIC_PERIOD, statistic="Maximum"
            ),
            thresholds={Severity.WARNING: 1},
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description="alerts SNS could not e-mail or EventBridge could not publish",
            actions_enabled=profile.alarm_actions_enabled,
            monitoring=self,
        ).values()
        """Fires when SNS could not deliver an alert e-mail (not on bounces: SNS never sees
        those), or EventBridge could not publish the key guard's alert (the alerts key itself
        disabled). It notifies the warning topic, which may be the failing channel: give it
        a second path, e.g. `DeploymentNotifier.forward_alarms` to chat."""

    def _topic(self, id: str, *, display_name: str, emails: Sequence[str]) -> sns.Topic:
        """An SSL-only topic under the alerts key, with e-mail subscriptions that dead-letter."""
        topic = sns.Topic(
            self, id, display_name=display_name, master_key=self.key, enforce_ssl=True
        )
        for address in emails:
            topic.add_subscription(
                subscriptions.EmailSubscription(address, dead_letter_queue=self.undelivered_alerts)
            )
        return topic

    @property
    def critical_topic(self) -> sns.Topic:
        return self.topics[Severity.CRITICAL]

    @property
    def warning_topic(self) -> sns.Topic:
        return self.topics[Severity.WARNING]

    def add_alarm(self, alarm: cloudwatch.Alarm, severity: Severity) -> None:
        """Notifies the severity's topic when the alarm fires and when it recovers."""
        self._serves(Stack.of(alarm))
        action = self._actions.get(severity)
        if action is None:
            action = self._actions[severity] = cloudwatch_actions.SnsAction(self.topics[severity])
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        self.alarms.append(alarm)

    def dashboard_for(self, scope: IConstruct) -> cloudwatch.Dashboard:
        """Where a construct of `scope` draws its widgets: `dashboard` in this stack, and in
        another stack that stack's own, `<dashboard_name>-<stack name>`, made on first use.
        A dashboard drawing another stack's resources would make the two stacks depend on
        each other, and the other stack already depends on this one for the topics."""
        if self._serves(Stack.of(scope)):
            return self.dashboard
        id = f"{id_of(stage_path(self))}Dashboard"
        return once_per_stack(
            scope,
            id,
            lambda stack: _dashboard(stack, id, f"{self.dashboard_name}-{stack.stack_name}"),
        )

    def _serves(self, stack: Stack) -> bool:
        """Whether `stack` is this one's. A stack of another account or region is refused:
        CloudWatch alarms notify topics of their own account and region only."""
        if reference(stack) == reference(self._stack):
            return True
        require_same_environment(
            stack,
            self._stack,
            cannot=f"its alarms cannot notify {self.node.path}'s topics",
            fix="give each {what} a Monitoring of its own",
        )
        return False

    def add_function(self, function: MonitoredFunction) -> cloudwatch.GraphWidget:
        """A dashboard row: invocations, errors, duration p50/p99, throttles, DLQ depth.

        Returns the DLQ-depth graph, so queues added to the function later join it.
        """
        alias = function.alias
        dashboard = self.dashboard_for(function)
        dashboard.add_widgets(
            cloudwatch.TextWidget(markdown=f"### {display_path(function)}", width=24, height=1)
        )
        dead_letters = _graph(
            "DLQ depth",
            [dead_letter_depth(q, label) for label, q in function.dead_letter_queues.items()],
            width=4,
        )
        dashboard.add_widgets(
            _graph("Invocations", [alias.metric_invocations(period=METRIC_PERIOD)]),
            _graph("Errors", [alias.metric_errors(period=METRIC_PERIOD)]),
            _graph(
                "Duration",
                [
                    alias.metric_duration(period=METRIC_PERIOD, statistic="p50", label="p50"),
                    alias.metric_duration(period=METRIC_PERIOD, statistic="p99", label="p99"),
                ],
            ),
            _graph("Throttles", [alias.metric_throttles(period=METRIC_PERIOD)]),
            dead_letters,
        )
        return dead_letters


def dead_letter_depth(queue: sqs.IQueue, label: str) -> cloudwatch.IMetric:
    """How a dead-letter queue's depth is drawn: the worst minute of each period."""
    return queue.metric_approximate_number_of_messages_visible(
        period=METRIC_PERIOD, statistic="Maximum", label=label
    )


def _graph(
    title: str, metrics: Sequence[cloudwatch.IMetric], width: int = 5
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=list(metrics), width=width, height=6)


def _dashboard(scope: Construct, id: str, name: str) -> cloudwatch.Dashboard:
    """A dashboard named `name`, refused if the name is too long or another dashboard of
    the app has it: names are unique in an account, and CDK only warns."""
    dashboard = cloudwatch.Dashboard(
        scope, id, dashboard_name=name, default_interval=DASHBOARD_SPAN
    )
    if not Token.is_unresolved(name):
        if len(name) > DASHBOARD_NAME_MAX:
            raise PropsError(
                f"{scope.node.path}: the dashboard name {name!r} is {len(name)} characters; "
                f"CloudWatch allows {DASHBOARD_NAME_MAX}"
            )
        account = Stack.of(scope).account
        if not Token.is_unresolved(account):
            named = _dashboards_named(scope.node.root)
            if (account, name) in named:
                raise PropsError(
                    f"{dashboard.node.path}: the dashboard name {name!r} is taken in account "
                    f"{account} by {named[account, name]}; pass dashboard_name"
                )
            named[account, name] = dashboard.node.path
    return dashboard


@cached_by_reference
def _dashboards_named(app: IConstruct) -> dict[tuple[str, str], str]:
    """The paths of the app's dashboards, by account and name (where both are known)."""
    return {}
