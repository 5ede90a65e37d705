"""DeploymentNotifier: CodePipeline (and chosen alarm) state changes posted to Slack or Teams."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.environments import (
    for_this_account,
    known_to_depend,
    require_same_environment,
)
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.monitoring import Monitoring
from opskit.constructs.ops_function import AlarmThresholds, OpsFunction
from opskit.constructs.paths import id_of, stage_path
from opskit.constructs.per_stack import once_per_stack
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile
from opskit.references import reference

SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}
"""Checks the notifier's configuration after each deployment without posting a message."""


class WebhookFormat(Enum):
    """The message shape the webhook expects (the handler's WEBHOOK_FORMAT)."""

    SLACK = "slack"
    TEAMS = "teams"


class DeploymentNotifier(Construct):
    """Posts CodePipeline execution (and optionally stage and action) state changes to a webhook.

    An EventBridge rule matches the pipelines' events and invokes the
    notifier's alias. Events the rule cannot deliver land in
    `rule_dead_letter_queue`; events the function still fails on after its
    retries land in the notifier's own `dead_letter_queue`. The secret must
    exist before the first deployment: each deployment's smoke test reads it.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None = None,
        webhook_secret: secretsmanager.ISecret | None = None,
        webhook_secret_name: str | None = None,
        webhook_format: WebhookFormat = WebhookFormat.SLACK,
        pipelines: Sequence[str] = (),
        include_stage_events: bool = False,
        include_action_events: bool = False,
        alarm_thresholds: AlarmThresholds | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param monitoring: where alarms notify and widgets are drawn.
        :param webhook_secret: an existing secret whose value is the webhook URL, or JSON
            `{"url": ...}`; give this or `webhook_secret_name`.
        :param webhook_secret_name: the name of such a secret (not ending in `-` and six
            characters, which Secrets Manager would take for its ARN suffix). For a secret
            encrypted with your own KMS key, pass `webhook_secret` with its key instead.
        :param webhook_format: Default: Slack.
        :param pipelines: pipeline names to watch. Default: every pipeline in the account
            and region.
        :param include_stage_events: also notify stage state changes. Default: False.
        :param include_action_events: also notify action state changes. Default: False.
        :param alarm_thresholds: Default: `AlarmThresholds()`.
        """
        super().__init__(scope, id)
        if (webhook_secret is None) == (webhook_secret_name is None):
            raise PropsError(
                f"{self.node.path}: give exactly one of webhook_secret or webhook_secret_name"
            )
        self.webhook_secret = webhook_secret or secretsmanager.Secret.from_secret_name_v2(
            self,
            "WebhookSecret",
            webhook_secret_name,  # type: ignore[arg-type]
        )
        self.notifier = OpsFunction(
            self,
            "Notifier",
            entry=FUNCTIONS_DIR / "notification",
            profile=profile,
            monitoring=monitoring,
            description="Posts CodePipeline state changes to Slack or Microsoft Teams",
            service_name="deployment-notifier",
            environment={
                "WEBHOOK_SECRET_ARN": self.webhook_secret.secret_arn,
                "WEBHOOK_FORMAT": webhook_format.value,
            },
            layers=[common_layer(self), powertools_layer(self)],
            timeout=Duration.seconds(30),
            alarm_thresholds=alarm_thresholds,
            smoke_test_event=SMOKE_TEST_EVENT,
        )
        self.webhook_secret.grant_read(self.notifier.function)

        self.rule_dead_letter_queue = self.notifier.add_dead_letter_queue(
            "RuleDeadLetterQueue", label="rule"
        )
        detail_types = ["CodePipeline Pipeline Execution State Change"]
        if include_stage_events:
            detail_types.append("CodePipeline Stage Execution State Change")
        if include_action_events:
            detail_types.append("CodePipeline Action Execution State Change")
        self.rule = events.Rule(
            self,
            "PipelineStateChanges",
            description="CodePipeline state changes for the deployment notifier",
            event_pattern=events.EventPattern(
                source=["aws.codepipeline"],
                detail_type=detail_types,
                detail={"pipeline": list(pipelines)} if pipelines else None,
            ),
            targets=[self._target()],
        )
        self.alarm_rules: list[events.Rule] = []
        self._rules_elsewhere_may_send = False

    def forward_alarms(self, *alarms: cloudwatch.IAlarm) -> list[events.Rule]:
        """Posts the alarms' changes to ALARM, and back from ALARM to OK, in chat as well.

        For alarms whose own channel may be what fails, such as the alarm on
        undelivered alert e-mails: EventBridge sees every state change, whether or
        not the alarm has actions, so this path does not depend on SNS or e-mail.
        An alarm of another stack gets its rule in that stack, whose undelivered events
        still land in `rule_dead_letter_queue`: stacks that share a monitoring stack (as
        this one may be) depend on it, and a rule here naming their alarms would make each
        depend on the other. Only where this stack is known to depend on the alarm's (its
        `Monitoring` is there, or `add_dependency` said so) is the rule here. Returns the
        rules, one per stack that holds one.
        """
        if not alarms:
            raise PropsError(f"{self.node.path}: forward_alarms needs at least one alarm")
        own = Stack.of(self)
        by_stack: dict[str, tuple[Stack | None, list[cloudwatch.IAlarm]]] = {}
        for alarm in alarms:
            stack = self._stack_of(alarm)
            home = (
                None
                if reference(stack) == reference(own)
                or known_to_depend(own, stack, monitoring=self.notifier.monitoring)
                else stack
            )
            by_stack.setdefault(reference(home or own), (home, []))[1].append(alarm)
        rules = []
        for home, listed in by_stack.values():
            rule = self._alarm_rule(listed, elsewhere=home)
            self.alarm_rules.append(rule)
            rules.append(rule)
        return rules

    def _stack_of(self, alarm: cloudwatch.IAlarm) -> Stack:
        """The alarm's stack, after refusing an alarm no rule could match: one of another
        account or region, which EventBridge never shows this account's rules."""
        stack = Stack.of(alarm)
        arn = alarm.alarm_arn
        parts = [] if Token.is_unresolved(arn) else arn.split(":")
        if len(parts) > 5:
            own = Stack.of(self)
            for what, theirs, ours in (
                ("region", parts[3], own.region),
                ("account", parts[4], own.account),
            ):
                if not Token.is_unresolved(ours) and theirs != ours:
                    raise PropsError(
                        f"{self.node.path}: alarm {arn} is in {what} {theirs}, this notifier in "
                        f"{ours}; EventBridge gives an alarm's events to rules of its own "
                        f"{what} only"
                    )
        return stack

    def _alarm_rule(
        self, alarms: Sequence[cloudwatch.IAlarm], *, elsewhere: Stack | None
    ) -> events.Rule:
        id = f"AlarmStateChanges{len(self.alarm_rules) + 1}"
        rule = events.Rule(
            self if elsewhere is None else elsewhere,
            id if elsewhere is None else f"{id_of(stage_path(self))}{id}",
            description="Alarm state changes the deployment notifier posts to chat",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[alarm.alarm_arn for alarm in alarms],
                detail={
                    "$or": [
                        {"state": {"value": ["ALARM"]}},
                        {"state": {"value": ["OK"]}, "previousState": {"value": ["ALARM"]}},
                    ]
                },
            ),
            targets=[self._target(elsewhere)],
        )
        return rule

    def _target(self, elsewhere: Stack | None = None) -> targets.LambdaFunction:
        """The notifier's alias, retried by EventBridge, undeliverable events kept."""
        return targets.LambdaFunction(
            self.notifier.alias,
            dead_letter_queue=(
                self.rule_dead_letter_queue
                if elsewhere is None
                else self._dead_letters_for(elsewhere)
            ),
            retry_attempts=4,
            max_event_age=Duration.hours(2),
        )

    def _dead_letters_for(self, stack: Stack) -> sqs.IQueue:
        """`rule_dead_letter_queue` as a rule of another stack names it: by its ARN, so CDK
        adds no statement naming that rule to the queue's policy (which would make each
        stack depend on the other). The policy lets this account's rules send instead."""
        own = Stack.of(self)
        require_same_environment(
            stack,
            own,
            cannot=f"its alarms cannot be forwarded to {self.node.path}'s function",
            fix="give each {what} a DeploymentNotifier of its own",
        )
        queue = self.rule_dead_letter_queue
        if not self._rules_elsewhere_may_send:
            self._rules_elsewhere_may_send = True
            queue.add_to_resource_policy(
                for_this_account(
                    "events.amazonaws.com",
                    actions=["sqs:SendMessage"],
                    resource=queue.queue_arn,
                    source_arn=f"arn:{own.partition}:events:{own.region}:{own.account}:rule/*",
                    account=None,  # EventBridge's DLQ guide conditions on the rule's ARN only
                )
            )
        id = f"{id_of(stage_path(self))}RuleDeadLetterQueue"
        return once_per_stack(
            stack, id, lambda there: sqs.Queue.from_queue_arn(there, id, queue.queue_arn)
        )
