"""MonthlyBudget: a cost budget that tracks spend and survives its own replacement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from opskit import MonthlyBudget, PropsError, allow_budget_alerts
from tests.synth import RetainEverything, make_app, only


def budget_of(**props: Any) -> dict[str, Any]:
    app = make_app()
    stack = cdk.Stack(app, "Costs")
    topic = sns.Topic(stack, props.pop("topic_id", "Alerts"))
    MonthlyBudget(stack, "Budget", amount_usd=props.pop("amount_usd", 100), topic=topic, **props)
    return only(Template.from_stack(stack).find_resources("AWS::Budgets::Budget"))["Properties"]


def name_of(**props: Any) -> str:
    return str(budget_of(budget_name_prefix="opskit-prod-monthly", **props)["Budget"]["BudgetName"])


def test_a_tag_filtered_budget_names_its_metric_so_budgets_tracks_spend():
    """CreateBudget: either FilterExpression and Metrics, or CostFilters and CostTypes."""
    data = budget_of(cost_tags={"Project": "cdk-opskit"})["Budget"]
    assert data["Metrics"] == ["UnblendedCost"]
    assert data["FilterExpression"] == {
        "And": [
            {"Tags": {"Key": "Project", "Values": ["cdk-opskit"], "MatchOptions": ["EQUALS"]}},
            NO_CREDITS_OR_REFUNDS,
        ]
    }
    assert "CostFilters" not in data and "CostTypes" not in data


NO_CREDITS_OR_REFUNDS = {
    "Not": {
        "Dimensions": {
            "Key": "RECORD_TYPE",
            "Values": ["Credit", "Refund"],
            "MatchOptions": ["EQUALS"],
        }
    }
}


def test_credits_and_refunds_never_hide_spend_even_without_tags():
    """FilterExpression has no IncludeCredit switch: credits are filtered out by charge type."""
    data = budget_of()["Budget"]
    assert data["FilterExpression"] == NO_CREDITS_OR_REFUNDS, "an And takes two or more"
    assert data["Metrics"] == ["UnblendedCost"]


def test_the_name_changes_with_whatever_forces_a_replacement() -> None:
    """NotificationsWithSubscribers is create-only: a new budget is created beside the old."""
    baseline = name_of()
    assert (
        baseline.startswith("opskit-prod-monthly-")
        and len(baseline) == len("opskit-prod-monthly-") + 8
    )
    assert name_of() == baseline, "the same notifications keep the same name"
    different_threshold: Sequence[float] = (50, 100)
    assert name_of(actual_percentages=different_threshold) != baseline
    assert name_of(topic_id="OtherAlerts") != baseline


def test_the_amount_changes_in_place_and_keeps_the_name():
    assert name_of(amount_usd=500) == name_of(amount_usd=100)


def test_without_a_prefix_cloudformation_names_the_budget():
    assert "BudgetName" not in budget_of()["Budget"]


def test_by_default_the_topic_hears_at_80_and_100_percent_spent_and_at_100_forecast():
    notifications = budget_of()["NotificationsWithSubscribers"]
    assert [
        (
            n["Notification"]["NotificationType"],
            n["Notification"]["Threshold"],
            n["Notification"]["ComparisonOperator"],
            n["Notification"]["ThresholdType"],
        )
        for n in notifications
    ] == [
        ("ACTUAL", 80, "GREATER_THAN", "PERCENTAGE"),
        ("ACTUAL", 100, "GREATER_THAN", "PERCENTAGE"),
        ("FORECASTED", 100, "GREATER_THAN", "PERCENTAGE"),
    ]
    for n in notifications:
        [subscriber] = n["Subscribers"]
        assert subscriber["SubscriptionType"] == "SNS"
        assert subscriber["Address"]["Ref"].startswith("Alerts")


def test_any_positive_amount_and_thresholds_are_accepted_however_small():
    """A budget of cents (monthlyBudgetUsd 0.5) alerting at 0.5% spent is still a budget."""
    budget = budget_of(amount_usd=0.5, actual_percentages=(0.5, 100))
    assert budget["Budget"]["BudgetLimit"] == {"Amount": 0.5, "Unit": "USD"}
    assert [n["Notification"]["Threshold"] for n in budget["NotificationsWithSubscribers"]] == [
        0.5,
        100,
        100,
    ]


@pytest.mark.parametrize("amount", [0, -5])
def test_an_amount_that_is_not_positive_is_refused_in_one_line(amount: float):
    with pytest.raises(PropsError, match=f"amount_usd must be positive, got {amount}"):
        budget_of(amount_usd=amount)


@pytest.mark.parametrize(
    ("percentages", "message"),
    [
        ((), "actual_percentages takes 1-4 thresholds .* got 0"),
        ((50, 80, 90, 100, 120), "actual_percentages takes 1-4 thresholds .* got 5"),
        ((80, 80), r"must be distinct and positive, got \[80, 80\]"),
        ((0, 100), r"must be distinct and positive, got \[0, 100\]"),
    ],
)
def test_thresholds_budgets_would_refuse_are_refused_in_one_line(percentages, message):
    """A budget takes five notifications (the forecast is one), none of them twice."""
    with pytest.raises(PropsError, match=message) as error:
        budget_of(actual_percentages=percentages)
    assert "\n" not in str(error.value)


def test_four_thresholds_and_the_forecast_make_the_five_notifications_budgets_allows():
    notifications = budget_of(actual_percentages=(50, 80, 90, 100))["NotificationsWithSubscribers"]
    assert sorted(
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in notifications
    ) == [("ACTUAL", 50), ("ACTUAL", 80), ("ACTUAL", 90), ("ACTUAL", 100), ("FORECASTED", 100)]


def test_moving_the_topic_to_another_stack_renames_the_budget():
    """The notifications then name the topic through another stack: a new address, so a
    replacement, which must not collide with the budget it replaces."""
    app = make_app()
    costs, alerts = cdk.Stack(app, "Costs"), cdk.Stack(app, "Alerts")
    MonthlyBudget(
        costs,
        "Budget",
        amount_usd=100,
        topic=sns.Topic(alerts, "Alerts"),
        budget_name_prefix="opskit-prod-monthly",
    )
    [budget] = Template.from_stack(costs).find_resources("AWS::Budgets::Budget").values()
    assert name_of() != budget["Properties"]["Budget"]["BudgetName"]


def test_a_topic_of_another_region_is_refused_with_what_to_pass_instead():
    app = make_app()
    alerts = cdk.Stack(
        app, "Alerts", env=cdk.Environment(account="111111111111", region="eu-west-1")
    )
    billing = cdk.Stack(
        app, "Billing", env=cdk.Environment(account="111111111111", region="us-east-1")
    )
    with pytest.raises(
        PropsError,
        match=r"us-east-1; call opskit.allow_budget_alerts\(topic\) in the topic.s stack",
    ):
        MonthlyBudget(billing, "Budget", amount_usd=10, topic=sns.Topic(alerts, "Alerts"))


TOPIC_ARN = "arn:aws:sns:eu-central-2:111111111111:alerts"


def budgets_may_publish(template: Template) -> bool:
    policies = template.find_resources("AWS::SNS::TopicPolicy").values()
    return any(
        statement.get("Principal") == {"Service": "budgets.amazonaws.com"}
        for policy in policies
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_an_imported_topic_is_refused_since_budgets_could_not_publish_to_it():
    """CDK cannot change an imported topic's policy; it would say nothing, and Budgets
    would drop every alert."""
    stack = cdk.Stack(make_app(), "Billing")
    topic = sns.Topic.from_topic_arn(stack, "Alerts", TOPIC_ARN)
    with pytest.raises(PropsError, match=r"Billing/Budget: the topic Billing/Alerts is imported"):
        MonthlyBudget(stack, "Budget", amount_usd=10, topic=topic)


def test_a_topic_in_another_region_alerts_once_its_own_stack_lets_budgets_publish():
    app = make_app()
    ops = cdk.Stack(app, "Ops", env=cdk.Environment(account="111111111111", region="eu-central-2"))
    topic = sns.Topic(ops, "Alerts")
    allow_budget_alerts(topic)
    billing = cdk.Stack(
        app, "Billing", env=cdk.Environment(account="111111111111", region="us-east-1")
    )
    imported = sns.Topic.from_topic_arn(billing, "Alerts", TOPIC_ARN)
    MonthlyBudget(billing, "Budget", amount_usd=10, topic=imported, topic_allows_budgets=True)
    assert budgets_may_publish(Template.from_stack(ops))
    [budget] = Template.from_stack(billing).find_resources("AWS::Budgets::Budget").values()
    subscribers = budget["Properties"]["NotificationsWithSubscribers"][0]["Subscribers"]
    assert subscribers == [{"SubscriptionType": "SNS", "Address": TOPIC_ARN}]


def test_allow_budget_alerts_refuses_an_imported_topic_in_one_line():
    stack = cdk.Stack(make_app(), "Billing")
    with pytest.raises(PropsError, match="imported, so its policy cannot be changed here"):
        allow_budget_alerts(sns.Topic.from_topic_arn(stack, "Alerts", TOPIC_ARN))


def test_a_budget_kept_on_replacement_by_an_aspect_fails_synth_naming_it():
    """Some organisations retain every resource; a retained budget outlives its replacement
    and keeps alerting at the old thresholds."""
    app = make_app()
    stack = cdk.Stack(app, "Costs")
    MonthlyBudget(stack, "Budget", amount_usd=10, topic=sns.Topic(stack, "Alerts"))
    cdk.Aspects.of(app).add(RetainEverything())
    with pytest.raises(RuntimeError, match=r"Costs/Budget: the budget is retained on replacement"):
        app.synth()
