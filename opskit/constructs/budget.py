"""MonthlyBudget: an AWS Budgets cost budget that warns before the month's money runs out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from aws_cdk import Stack
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_sns as sns
from constructs import Construct

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
            fix="pass the topic by ARN instead (sns.Topic.from_topic_arn)",
        )
        topic.add_to_resource_policy(
            for_this_account(
                "budgets.amazonaws.com",
                actions=["sns:Publish"],
                resource=topic.topic_arn,
                account=stack.account,
                source_arn=f"arn:{stack.partition}:budgets::{stack.account}:*",
            )
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

    def _fingerprint(self, notifications: object, topic: sns.ITopic) -> str:
        """Eight hex digits that change whenever the (create-only) notifications do. A topic
        of another stack resolves here as in its own, so that stack is named too."""
        stack = Stack.of(self)
        resolved: object = stack.resolve(notifications)
        topics_stack = Stack.of(topic)
        if reference(topics_stack) != reference(stack):
            resolved = [resolved, stage_path(topics_stack)]
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]


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
