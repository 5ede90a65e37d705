"""One Monitoring shared by the constructs of other stacks: an app with a monitoring stack
(and a log processor beside it) and stacks of operational functions, the layout of a team
that shares its alert topics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk.assertions import Template

from opskit import (
    DEV,
    PROD,
    BackupAutomation,
    DeploymentNotifier,
    LogProcessor,
    Monitoring,
    OpsFunction,
    PropsError,
    SnapshotCleanup,
    UserService,
)
from opskit.constructs.paths import display_path
from tests.synth import dashboard_text, handler_folder, make_app, resources_of_type

ENVIRONMENT = cdk.Environment(account="111111111111", region="eu-west-1")


@dataclass
class Layout:
    app: cdk.App
    shared: cdk.Stack
    workers: cdk.Stack
    others: cdk.Stack
    monitoring: Monitoring
    processor: LogProcessor
    pager: OpsFunction
    notifier: DeploymentNotifier
    forwarded: list[events.Rule]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    app = make_app()
    shared = cdk.Stack(app, "Shared", env=ENVIRONMENT)
    monitoring = Monitoring(shared, "Monitoring", profile=PROD, alert_emails=["ops@example.com"])
    workers = cdk.Stack(app, "Workers", env=ENVIRONMENT)
    entry = handler_folder(Path(tmp_path_factory.mktemp("job")))
    OpsFunction(
        workers,
        "Job",
        entry=entry,
        profile=PROD,
        monitoring=monitoring,
        smoke_test_event={"ping": True},
    )
    BackupAutomation(workers, "Backup", profile=PROD, monitoring=monitoring)
    SnapshotCleanup(workers, "Cleanup", profile=PROD, monitoring=monitoring)
    UserService(
        workers, "Users", profile=PROD, monitoring=monitoring, ses_sender="no-reply@example.com"
    )
    DeploymentNotifier(
        workers, "Deployments", profile=PROD, monitoring=monitoring, webhook_secret_name="ops/hook"
    ).forward_alarms(monitoring.undelivered_alerts_alarm)
    workers_logs = LogProcessor(workers, "Logs", profile=PROD, monitoring=monitoring)
    workers_logs.watch_functions(workers)

    others = cdk.Stack(app, "Others", env=ENVIRONMENT)
    OpsFunction(others, "Job", entry=entry, profile=PROD, monitoring=monitoring)
    pager = OpsFunction(others, "Pager", entry=entry, profile=PROD, monitoring=monitoring)
    monitoring.critical_topic.add_subscription(subscriptions.LambdaSubscription(pager.alias))
    LogProcessor(others, "Logs", profile=PROD, monitoring=monitoring)
    processor = LogProcessor(shared, "Logs", profile=PROD, monitoring=monitoring)
    processor.watch_functions(others)
    processor.subscribe(only_function(workers, "Job").log_group)
    notifier = DeploymentNotifier(
        shared, "Deployments", profile=PROD, webhook_secret_name="ops/hook"
    )
    workers_logs.subscribe(notifier.notifier.log_group)
    forwarded = notifier.forward_alarms(
        monitoring.undelivered_alerts_alarm,
        *only_function(workers, "Job").alarms["error_rate"].values(),
        *pager.alarms["error_rate"].values(),
    )
    return Layout(app, shared, workers, others, monitoring, processor, pager, notifier, forwarded)


def only_function(stack: cdk.Stack, id: str) -> OpsFunction:
    function = stack.node.find_child(id)
    assert isinstance(function, OpsFunction)
    return function


def test_the_stacks_synthesize_and_only_the_functions_stack_depends_on_the_other(layout):
    assembly = layout.app.synth()
    assert {stack.stack_name for stack in assembly.stacks} == {"Shared", "Workers", "Others"}
    for stack in (layout.workers, layout.others):
        assert [dependency.stack_name for dependency in stack.dependencies] == ["Shared"]
    assert layout.shared.dependencies == []


def test_constructs_of_another_stack_draw_on_that_stacks_own_dashboard(layout):
    [name] = [
        dashboard["Properties"]["DashboardName"]
        for dashboard in resources_of_type(
            Template.from_stack(layout.workers), "AWS::CloudWatch::Dashboard"
        ).values()
    ]
    assert name == "opskit-prod-eu-west-1-Workers"
    rows = dashboard_text(Template.from_stack(layout.workers))
    for row in ("### Workers/Job", "### Workers/Backup", "### Workers/Users", "Log lines"):
        assert row in rows, row
    shared_rows = dashboard_text(Template.from_stack(layout.shared))
    assert "### Workers" not in shared_rows and "### Others" not in shared_rows
    assert layout.monitoring.dashboard_for(layout.workers) is layout.monitoring.dashboard_for(
        layout.workers
    )


def test_their_alarms_notify_the_shared_topics(layout):
    alarms = resources_of_type(Template.from_stack(layout.workers), "AWS::CloudWatch::Alarm")
    actions = {
        str(action)
        for alarm in alarms.values()
        for action in alarm["Properties"].get("AlarmActions", [])
    }
    topics = {"MonitoringCriticalTopic", "MonitoringWarningTopic"}
    assert {topic for topic in topics for action in actions if topic in action} == topics
    assert all(any(topic in action for topic in topics) for action in actions)


def test_two_monitorings_of_one_id_each_draw_on_their_own_dashboard_in_a_third_stack():
    """Dev's and prod's monitoring stacks, and one stack of functions for both."""
    app = make_app()
    monitorings = [
        Monitoring(cdk.Stack(app, name), "Monitoring", profile=profile)
        for name, profile in (("MonDev", DEV), ("MonProd", PROD))
    ]
    functions = cdk.Stack(app, "Functions")
    dashboards = [monitoring.dashboard_for(functions) for monitoring in monitorings]
    assert dashboards[0] is not dashboards[1]
    assert [dashboard.node.scope for dashboard in dashboards] == [functions, functions]


def test_a_construct_holding_the_dashboards_id_in_the_other_stack_is_refused():
    app = make_app()
    monitoring = Monitoring(cdk.Stack(app, "Shared"), "Monitoring", profile=PROD)
    other = cdk.Stack(app, "Other")
    taken = "SharedMonitoringDashboard"
    cdk.CfnWaitConditionHandle(other, taken)
    with pytest.raises(PropsError, match=f"^Other: opskit keeps its own '{taken}' in each stack"):
        monitoring.dashboard_for(other)
    assert monitoring.dashboard_for(monitoring) is monitoring.dashboard


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            cdk.Environment(account="111111111111", region="us-east-1"),
            "Shared is in region eu-west-1, this stack in us-east-1; give each region a "
            "Monitoring of its own",
        ),
        (
            cdk.Environment(account="222222222222", region="eu-west-1"),
            "Shared is in account 111111111111, this stack in 222222222222; give each account",
        ),
        (None, "stack Elsewhere names no account and the other does; give both stacks the"),
    ],
    ids=["other-region", "other-account", "environment-agnostic"],
)
def test_a_construct_of_another_region_or_account_is_refused_in_one_line(tmp_path, other, message):
    """CloudWatch alarms notify topics of their own account and region only, and an
    environment-agnostic stack may be anywhere (CDK's own error would advise a physical
    name, which deploys alarms that notify nobody)."""
    app = make_app()
    monitoring = Monitoring(cdk.Stack(app, "Shared", env=ENVIRONMENT), "Monitoring", profile=PROD)
    elsewhere = cdk.Stack(app, "Elsewhere", env=other)
    with pytest.raises(PropsError, match=f"^Elsewhere: its alarms cannot notify .*{message}"):
        OpsFunction(
            elsewhere, "Job", entry=handler_folder(tmp_path), profile=PROD, monitoring=monitoring
        )


def test_a_dashboard_name_over_cloudwatchs_255_characters_is_refused():
    app = make_app()
    monitoring = Monitoring(
        cdk.Stack(app, "Shared"), "Monitoring", profile=PROD, dashboard_name="d" * 200
    )
    other = cdk.Stack(app, "S" + "x" * 60)
    with pytest.raises(PropsError, match="is 262 characters; CloudWatch allows 255"):
        monitoring.dashboard_for(other)
    with pytest.raises(PropsError, match="is 256 characters"):
        Monitoring(cdk.Stack(app, "Own"), "Monitoring", profile=PROD, dashboard_name="d" * 256)


def test_a_processor_watches_another_stacks_groups_even_where_their_paths_repeat(layout):
    """Both stacks have a `Job`, and `Others` a processor of the processor's own id: each
    group is told apart by its stack, and subscribed from that stack (a filter in the
    processor's stack would make each stack depend on the other). `Workers`' processor,
    whose stack depends on `Shared` for its monitoring, subscribes a group of `Shared` from
    its own stack."""
    watched = {display_path(group) for group in layout.processor.watched}
    assert watched == {
        "Workers/Job/FunctionLogs",
        "Others/Job/FunctionLogs",
        "Others/Logs/Processor/FunctionLogs",
        "Others/Logs/Processor/SmokeTestLogs",
    }

    def filters_to_shared(stack: cdk.Stack) -> int:
        filters = resources_of_type(Template.from_stack(stack), "AWS::Logs::SubscriptionFilter")
        return sum("'StackName': 'Shared'" in str(f["Properties"]) for f in filters.values())

    stacks = (layout.shared, layout.workers, layout.others)
    assert [filters_to_shared(stack) for stack in stacks] == [0, 2, 3]
    workers = resources_of_type(
        Template.from_stack(layout.workers), "AWS::Logs::SubscriptionFilter"
    )
    [from_shared] = [
        str(f["Properties"]["LogGroupName"])
        for f in workers.values()
        if "'StackName': 'Shared'" in str(f["Properties"]["LogGroupName"])
    ]
    assert "DeploymentsNotifierFunctionLogs" in from_shared


def test_an_alert_receiver_of_another_stack_is_never_watched(layout):
    """`Pager` receives the critical alerts: watching it would feed each alert back."""
    assert "Others/Pager/FunctionLogs" not in {
        display_path(group) for group in layout.processor.watched
    }
    with pytest.raises(PropsError, match="Pager, which receives the processor's alerts"):
        layout.processor.subscribe(layout.pager.log_group)


def test_a_notifier_forwards_alarms_of_other_stacks_by_a_rule_in_each_of_them(layout):
    """A rule in the notifier's stack naming another stack's alarms would make each stack
    depend on the other: each stack gets its own rule, sending what it cannot deliver to
    the notifier's rule dead-letter queue all the same. (This notifier uses no Monitoring;
    `Workers`' notifier, which uses `Shared`'s, forwards `Shared`'s alarm from its own
    stack.)"""
    assert [display_path(rule) for rule in layout.forwarded] == [
        "Shared/Deployments/AlarmStateChanges1",
        "Workers/SharedDeploymentsAlarmStateChanges2",
        "Others/SharedDeploymentsAlarmStateChanges3",
    ]
    for stack in (layout.workers, layout.others):
        rules = resources_of_type(Template.from_stack(stack), "AWS::Events::Rule")
        [target] = [
            target
            for rule in rules.values()
            for target in rule["Properties"]["Targets"]
            if "'StackName': 'Shared'" in str(target["Arn"])
        ]
        assert "DeploymentsNotifierAlias" in str(target["Arn"])
        assert "DeploymentsNotifierRuleDeadLetterQueue" in str(target["DeadLetterConfig"]["Arn"])
    [policy] = [
        policy["Properties"]["PolicyDocument"]
        for policy in resources_of_type(
            Template.from_stack(layout.shared), "AWS::SQS::QueuePolicy"
        ).values()
        if "RuleDeadLetterQueue" in str(policy["Properties"]["Queues"])
    ]
    [from_any_rule] = [
        s for s in policy["Statement"] if "rule/*" in str(s.get("Condition", {}).get("ArnLike"))
    ]
    assert from_any_rule["Principal"] == {"Service": "events.amazonaws.com"}
    assert set(from_any_rule["Condition"]) == {"ArnLike"}, "as EventBridge's DLQ guide has it"
    assert "111111111111:rule/*" in str(from_any_rule["Condition"]["ArnLike"])


def test_a_second_dashboard_of_one_name_in_the_app_is_refused_naming_the_first():
    """Two teams' monitoring stacks of one profile, account and region: CloudFormation
    would fail the second deployment, and CDK only warns."""
    app = make_app()
    Monitoring(cdk.Stack(app, "Payments", env=ENVIRONMENT), "Monitoring", profile=PROD)
    search = cdk.Stack(app, "Search", env=ENVIRONMENT)
    with pytest.raises(
        PropsError, match="'opskit-prod-eu-west-1' is taken in account 111111111111 by Payments/"
    ):
        Monitoring(search, "Monitoring", profile=PROD)
    Monitoring(search, "Named", profile=PROD, dashboard_name="opskit-prod-search")


def test_ids_made_in_another_stack_are_the_same_when_a_stage_holds_the_stacks():
    """An app moved into a pipeline stage, its stack names pinned, deploys the same
    templates: a new logical id would replace the dashboard under its own name, and fail."""
    ids = []
    for scope in (make_app(), cdk.Stage(make_app(), "Prod")):
        monitoring = Monitoring(cdk.Stack(scope, "Shared"), "Monitoring", profile=PROD)
        ids.append(monitoring.dashboard_for(cdk.Stack(scope, "Workers")).node.id)
    assert ids == ["SharedMonitoringDashboard"] * 2


def test_dashboards_of_one_name_in_two_accounts_are_two_dashboards():
    app = make_app()
    for account in ("111111111111", "222222222222"):
        env = cdk.Environment(account=account, region="eu-west-1")
        Monitoring(cdk.Stack(app, f"Prod{account}", env=env), "Monitoring", profile=PROD)


def test_a_log_group_or_alarm_of_another_region_is_refused_in_one_line(tmp_path):
    app = make_app()
    shared = cdk.Stack(app, "Shared", env=ENVIRONMENT)
    abroad = cdk.Stack(
        app, "Abroad", env=cdk.Environment(account="111111111111", region="us-east-1")
    )
    processor = LogProcessor(shared, "Logs", profile=PROD, alert_topic=sns.Topic(shared, "Alerts"))
    with pytest.raises(PropsError, match="Shared is in region eu-west-1, this stack in us-east-1"):
        processor.subscribe(logs.LogGroup(abroad, "Group"))
    notifier = DeploymentNotifier(shared, "Deployments", profile=PROD, webhook_secret_name="hook")
    foreign = "arn:aws:cloudwatch:us-east-1:111111111111:alarm:Orders"
    with pytest.raises(PropsError, match=r"alarm .*:alarm:Orders is in region us-east-1"):
        notifier.forward_alarms(cloudwatch.Alarm.from_alarm_arn(shared, "Foreign", foreign))
