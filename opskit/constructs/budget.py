"""MonthlyBudget: an AWS Budgets cost budget that warns before the month's money runs out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import jsii
from aws_cdk import CfnDeletionPolicy, Stack
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_sns as sns
from constructs import Construct, IValidation

from opskit.constructs.environments import for_this_account, require_same_environment
from opskit.constructs.paths import stage_path
from opskit.errors import PropsError
from opskit.references import reference


class MonthlyBudget(Construct):
    """A monthly cost budget, filtered to one cost-allocation tag, alerting a topic.

    Alerts fire on actual spend past each of `actual_percentages` and on a
    forecast past 100%. Spend is unblended cost without credits and refunds: an
    account living on credits still hears when its usage nears the limit (the
    older CostTypes counted credits by default, and FilterExpression has no
    such switch, so they are filtered out by charge type).

    CloudFormation replaces a budget whose notifications change (they are
    create-only) and creates the new one before deleting the old, so two
    budgets exist for a moment: the name carries a hash of the notifications,
    and a replacement never collides with the budget it replaces.
    """

    METRIC = "UnblendedCost"
    """Budgets rejects a FilterExpression without Metrics, and then tracks nothing."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        amount_usd: float,
        topic: sns.ITopic,
        budget_name_prefix: str | None = None,
        cost_tags: Mapping[str, str] | None = None,
        actual_percentages: Sequence[float] = (80, 100),
        topic_allows_budgets: bool = False,
    ) -> None:
        """
        :param amount_usd: the monthly limit in US dollars.
        :param topic: the SNS topic that receives alerts (its key must let
            budgets.amazonaws.com use it).
        :param budget_name_prefix: the budget is named `<prefix>-<hash of its notifications>`.
            Default: a name CloudFormation generates.
        :param cost_tags: cost-allocation tags (key: value) a cost must carry, all of them,
            to count; activate them in the Billing console first. Default: the whole account.
        :param actual_percentages: thresholds on actual spend, distinct, at most four.
            Default: 80% and 100%.
        :param topic_allows_budgets: for a topic imported by ARN (its policy cannot be
            changed from here): its own stack already lets AWS Budgets publish to it, by
            `allow_budget_alerts`. Without it, an imported topic is refused, since Budgets
            would drop every alert.
        """
        super().__init__(scope, id)
        if amount_usd <= 0:
            raise PropsError(f"{self.node.path}: amount_usd must be positive, got {amount_usd}")
        percentages = list(actual_percentages)
        if not percentages or len(percentages) > MAX_ACTUAL_ALERTS:
            raise PropsError(
                f"{self.node.path}: actual_percentages takes 1-{MAX_ACTUAL_ALERTS} thresholds "
                f"(Budgets allows 5 notifications, one is the forecast's), got {len(percentages)}"
            )
        if len(set(percentages)) < len(percentages) or min(percentages) <= 0:
            raise PropsError(
                f"{self.node.path}: actual_percentages must be distinct and positive, "
                f"got {percentages}"
            )
        stack = Stack.of(self)
        require_same_environment(
            stack,
            Stack.of(topic),
            cannot=f"{self.node.path} cannot reference the topic {topic.node.path}",
            fix=(
                "call opskit.allow_budget_alerts(topic) in the topic's stack, and pass it here "
                "by ARN (sns.Topic.from_topic_arn) with topic_allows_budgets=True"
            ),
        )
        if not _let_budgets_publish(topic) and not topic_allows_budgets:
            raise PropsError(
                f"{self.node.path}: the topic {topic.node.path} is imported, so its policy "
                "cannot let AWS Budgets publish from here and every alert would be dropped: "
                "call opskit.allow_budget_alerts(topic) where it is defined, then pass "
                "topic_allows_budgets=True"
            )
        subscribers = [
            budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=topic.topic_arn)
        ]
        notifications = [
            budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=subscribers,
            )
            for kind, percent in [
                *(("ACTUAL", p) for p in actual_percentages),
                ("FORECASTED", 100),
            ]
        ]
        self.budget = budgets.CfnBudget(
            self,
            "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=(
                    None
                    if budget_name_prefix is None
                    else f"{budget_name_prefix}-{self._fingerprint(notifications, topic)}"
                ),
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=amount_usd, unit="USD"),
                filter_expression=_spend(cost_tags or {}),
                metrics=[self.METRIC],
            ),
            notifications_with_subscribers=notifications,
        )
        self.node.add_validation(_ReplacedBudgetsGo(self))

    def _fingerprint(self, notifications: object, topic: sns.ITopic) -> str:
        """Eight hex digits that change whenever the (create-only) notifications do. A topic
        of another stack resolves here as in its own, so that stack is named too."""
        stack = Stack.of(self)
        resolved: object = stack.resolve(notifications)
        topics_stack = Stack.of(topic)
        if reference(topics_stack) != reference(stack):
            resolved = [resolved, stage_path(topics_stack)]
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]


def allow_budget_alerts(topic: sns.ITopic) -> None:
    """Lets this account's AWS Budgets publish to `topic`, a topic defined in this app.

    `MonthlyBudget` does it for the topic it is given. A budget whose stack is in another
    region than the topic takes the topic by ARN, so the topic's own stack calls this. A
    topic under a KMS key also needs the key to let budgets.amazonaws.com use it
    (`Monitoring`'s keys do).
    """
    if not _let_budgets_publish(topic):
        raise PropsError(
            f"{topic.node.path}: the topic is imported, so its policy cannot be changed "
            "here; call allow_budget_alerts in the stack that defines it"
        )


def _let_budgets_publish(topic: sns.ITopic) -> bool:
    """Adds the statement to the topic's policy; False for an imported topic, whose policy
    CDK cannot change."""
    stack = Stack.of(topic)
    return topic.add_to_resource_policy(
        for_this_account(
            "budgets.amazonaws.com",
            actions=["sns:Publish"],
            resource=topic.topic_arn,
            account=stack.account,
            source_arn=f"arn:{stack.partition}:budgets::{stack.account}:*",
        )
    ).statement_added


@jsii.implements(IValidation)
class _ReplacedBudgetsGo:
    """At synth, after Aspects: a budget kept when CloudFormation replaces it (a
    retain-everything Aspect does that) outlives its replacement, alerting at the old
    thresholds, and returning to them collides with its name."""

    def __init__(self, budget: MonthlyBudget) -> None:
        self.budget = budget

    def validate(self) -> list[str]:
        if self.budget.budget.cfn_options.update_replace_policy != CfnDeletionPolicy.RETAIN:
            return []
        return [
            f"{self.budget.node.path}: the budget is retained on replacement (a removal-policy "
            "Aspect?); a replaced budget must go, or it keeps alerting at its old thresholds "
            "and returning to them collides with its name: leave MonthlyBudget out of it"
        ]


MAX_ACTUAL_ALERTS = 4
"""AWS Budgets allows a budget five notifications; the forecast takes one."""

NOT_SPEND = ("Credit", "Refund")
"""Charge types (the RECORD_TYPE dimension) that lower the bill rather than measure usage."""


def _spend(tags: Mapping[str, str]) -> budgets.CfnBudget.ExpressionProperty:
    """A Budgets filter expression matching charges that carry every one of `tags`, credits
    and refunds left out. Tag keys are plain (`Project`), as in Cost Explorer expressions;
    the `user:` prefix belongs to the older CostFilters."""
    expressions = [
        budgets.CfnBudget.ExpressionProperty(
            tags=budgets.CfnBudget.TagValuesProperty(
                key=key, values=[value], match_options=["EQUALS"]
            )
        )
        for key, value in sorted(tags.items())
    ]
    expressions.append(
        budgets.CfnBudget.ExpressionProperty(
            not_=budgets.CfnBudget.ExpressionProperty(
                dimensions=budgets.CfnBudget.ExpressionDimensionValuesProperty(
                    key="RECORD_TYPE", values=list(NOT_SPEND), match_options=["EQUALS"]
                )
            )
        )
    )
    if len(expressions) == 1:  # an And takes two or more
        return expressions[0]
    return budgets.CfnBudget.ExpressionProperty(and_=expressions)
