"""LogProcessor: which log groups reach the processor, who may invoke it, what it may touch."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk.assertions import Match, Template

from opskit import (
    DEV,
    PROD,
    LogProcessor,
    LogProcessorThresholds,
    Monitoring,
    OpsFunction,
    PropsError,
    Severity,
)
from opskit.bundling import FUNCTIONS_DIR
from tests.scanners import synthesize_with_rule_packs
from tests.synth import as_list, make_app, only
from tests.test_ops_function import role_statements

ALIAS_REF_PREFIX = "LogsProcessorAlias"


@pytest.fixture(scope="module")
def synthesized() -> dict[str, Template]:
    """Synthesized once: a prod stack where the processor watches a named log group and every
    other function, one of which receives its alerts; a dev stack with every option set."""
    app = make_app()
    watching = cdk.Stack(app, "Watching")
    monitoring = Monitoring(watching, "Monitoring", profile=PROD)
    worker = OpsFunction(
        watching,
        "Worker",
        entry=FUNCTIONS_DIR / "smoke_test",
        profile=PROD,
        monitoring=monitoring,
        smoke_test_event={"ping": True},
    )
    forwarder = OpsFunction(watching, "Forwarder", entry=FUNCTIONS_DIR / "smoke_test", profile=PROD)
    monitoring.critical_topic.add_subscription(subscriptions.LambdaSubscription(forwarder.alias))
    processor = LogProcessor(
        watching,
        "Logs",
        profile=PROD,
        monitoring=monitoring,
        log_groups=["/aws/lambda/orders"],
    )
    processor.watch_functions(watching)

    options = cdk.Stack(app, "Options")
    table = dynamodb.Table(
        options,
        "Windows",
        partition_key=dynamodb.Attribute(name="logGroup", type=dynamodb.AttributeType.STRING),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
    )
    LogProcessor(
        options,
        "Logs",
        profile=DEV,
        alert_topic=sns.Topic(options, "Pager"),
        log_groups=[logs.LogGroup(options, "Api"), "/ecs/web"],
        filter_pattern=logs.FilterPattern.any_term("ERROR", "FATAL"),
        error_patterns=[r"\bwarn\b"],
        critical_patterns=[r"\bpanic\b"],
        metric_namespace="Shop/Logs",
        environment_name="dev-eu",
        alert_window=cdk.Duration.minutes(5),
        rate_limit_table=table,
        thresholds=LogProcessorThresholds(error_lines={Severity.WARNING: 100}),
    )
    assert worker.smoke_test_log_group is not None
    return {
        "watching": Template.from_stack(watching),
        "options": Template.from_stack(options),
        "worker_logs": watching.resolve(worker.log_group.log_group_name),
        "worker_smoke_logs": watching.resolve(worker.smoke_test_log_group.log_group_name),
        "forwarder_logs": watching.resolve(forwarder.log_group.log_group_name),
        "own_logs": watching.resolve(processor.processor.log_group.log_group_name),
    }


@pytest.fixture(scope="module")
def watching(synthesized) -> Template:
    return synthesized["watching"]


@pytest.fixture(scope="module")
def options(synthesized) -> Template:
    return synthesized["options"]


def processor_function(template: Template) -> dict:
    return only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Handler": "app.lambda_handler", "MemorySize": 512}},
        )
    )["Properties"]


def watched_log_groups(template: Template) -> list:
    return [
        f["Properties"]["LogGroupName"]
        for f in template.find_resources("AWS::Logs::SubscriptionFilter").values()
    ]


def test_it_watches_the_named_group_and_every_other_function_but_not_itself(synthesized):
    watched = watched_log_groups(synthesized["watching"])
    assert "/aws/lambda/orders" in watched
    assert synthesized["worker_logs"] in watched
    assert synthesized["worker_smoke_logs"] in watched
    assert synthesized["own_logs"] not in watched, "its own log lines would loop"
    assert synthesized["forwarder_logs"] not in watched, "it receives the alerts: a loop"
    assert len(watched) == 3


def test_each_subscription_delivers_every_event_to_the_alias(watching):
    for subscription in watching.find_resources("AWS::Logs::SubscriptionFilter").values():
        properties = subscription["Properties"]
        assert properties["DestinationArn"]["Ref"].startswith(ALIAS_REF_PREFIX)
        assert properties["FilterPattern"] == ""


def test_cloudwatch_logs_of_this_account_may_invoke_exactly_the_alias_once_for_all_groups(
    watching,
):
    """One statement, whatever the number of log groups: one per group would outgrow the
    20 KB resource-based policy Lambda allows."""
    filters = watching.find_resources("AWS::Logs::SubscriptionFilter")
    [(permission_id, permission)] = watching.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "logs.amazonaws.com"}}
    ).items()
    assert len(filters) == 3
    for subscription in filters.values():
        assert subscription["DependsOn"] == [permission_id], "the permission comes first"
    properties = permission["Properties"]
    assert properties["Action"] == "lambda:InvokeFunction"
    assert properties["FunctionName"]["Ref"].startswith(ALIAS_REF_PREFIX)
    assert properties["SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert json.dumps(properties["SourceArn"]).endswith(':log-group:*"]]}')


def test_the_processor_publishes_to_the_critical_topic_and_claims_windows_in_its_table(watching):
    function = processor_function(watching)
    statements = role_statements(watching, function["Role"]["Fn::GetAtt"][0])
    by_action = {
        action: statement["Resource"]
        for statement in statements
        for action in as_list(statement["Action"])
    }
    [topic_id] = watching.find_resources(
        "AWS::SNS::Topic", {"Properties": {"DisplayName": "opskit prod critical alerts"}}
    )
    assert by_action["sns:Publish"] == {"Ref": topic_id}
    assert by_action["kms:GenerateDataKey*"]["Fn::GetAtt"][0].startswith("MonitoringAlertsKey")
    assert by_action["dynamodb:UpdateItem"]["Fn::GetAtt"][0].startswith("LogsAlertWindows")
    assert not [a for a in by_action if a.startswith("dynamodb:") and a != "dynamodb:UpdateItem"]
    assert function["Environment"]["Variables"]["ALERT_TOPIC_ARN"] == {"Ref": topic_id}


def test_the_handler_contract_environment_and_defaults(watching):
    variables = processor_function(watching)["Environment"]["Variables"]
    table_id = next(iter(watching.find_resources("AWS::DynamoDB::Table")))
    assert {k: v for k, v in variables.items() if k != "ALERT_TOPIC_ARN"} == {
        "POWERTOOLS_SERVICE_NAME": "log-processor",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "METRIC_NAMESPACE": "CustomApp/Errors",
        "ENVIRONMENT_NAME": "prod",
        "ALERT_WINDOW_SECONDS": "900",
        "MAX_DECOMPRESSED_BYTES": str(10 * 1024 * 1024),
        "RATE_LIMIT_TABLE": {"Ref": table_id},
    }


def test_options_reach_the_handler(options):
    variables = processor_function(options)["Environment"]["Variables"]
    assert variables["ERROR_PATTERNS"] == '["\\\\bwarn\\\\b"]'
    assert json.loads(variables["CRITICAL_PATTERNS"]) == [r"\bpanic\b"]
    assert variables["METRIC_NAMESPACE"] == "Shop/Logs"
    assert variables["ENVIRONMENT_NAME"] == "dev-eu"
    assert variables["ALERT_WINDOW_SECONDS"] == "300"
    assert variables["RATE_LIMIT_TABLE"] == {
        "Ref": next(iter(options.find_resources("AWS::DynamoDB::Table")))
    }
    patterns = {
        f["Properties"]["FilterPattern"]
        for f in options.find_resources("AWS::Logs::SubscriptionFilter").values()
    }
    assert patterns == {'?"ERROR" ?"FATAL"'}
    assert "/ecs/web" in watched_log_groups(options)


def test_failed_deliveries_go_to_the_dead_letter_queue_without_retries(watching):
    configs = watching.find_resources(
        "AWS::Lambda::EventInvokeConfig",
        {"Properties": {"MaximumRetryAttempts": 0, "DestinationConfig": Match.any_value()}},
    )
    config = only(configs)["Properties"]
    assert config["MaximumEventAgeInSeconds"] == 6 * 3600
    assert "OnFailure" in config["DestinationConfig"]


def test_the_window_table_is_encrypted_expires_items_and_keeps_backups_per_profile(
    watching, options
):
    table = only(watching.find_resources("AWS::DynamoDB::Table"))
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "logGroup", "KeyType": "HASH"}]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    [key] = watching.find_resources(
        "AWS::KMS::Key",
        {"Properties": {"Description": Match.string_like_regexp("tables and secrets")}},
    )
    assert properties["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
    }, "prod's profile encrypts data with the stack's own key"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"
    assert len(options.find_resources("AWS::DynamoDB::Table")) == 1, "the given table, no other"


def key_statements(template: Template, key: str) -> list[dict]:
    function = processor_function(template)
    return [
        s
        for s in role_statements(template, function["Role"]["Fn::GetAtt"][0])
        if s["Resource"] == {"Fn::GetAtt": [key, "Arn"]}
    ]


def test_a_given_table_under_a_key_of_its_own_is_used_through_dynamodb_only(options, watching):
    """The stack's data key (prod's window table) lets the account's callers use it through
    DynamoDB by its own policy; a key the caller brings gets a statement on the role."""
    [key] = options.find_resources("AWS::KMS::Key")
    [statement] = key_statements(options, key)
    assert "kms:Decrypt" in statement["Action"]
    assert not [a for a in statement["Action"] if "*" in a]
    assert "dynamodb." in json.dumps(statement["Condition"]["StringEquals"]["kms:ViaService"])
    [data_key] = watching.find_resources(
        "AWS::KMS::Key",
        {"Properties": {"Description": Match.string_like_regexp("tables and secrets")}},
    )
    assert key_statements(watching, data_key) == []


def test_alarms_on_critical_lines_and_malformed_payloads_read_the_environment_total(watching):
    alarms = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in watching.find_resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "CustomApp/Errors"
    }
    assert set(alarms) == {"CriticalCount", "MalformedPayloads"}
    for alarm in alarms.values():
        assert alarm["Dimensions"] == [{"Name": "Environment", "Value": "prod"}]
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 300, 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["AlarmDescription"].startswith("[WARNING]")
        warning_topic = alarm["AlarmActions"][0]["Ref"]
        assert warning_topic.startswith("MonitoringWarningTopic")


def test_an_error_line_alarm_only_when_asked(options):
    [alarm] = [
        a["Properties"]
        for a in options.find_resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ErrorCount"
    ]
    assert (alarm["Namespace"], alarm["Threshold"]) == ("Shop/Logs", 100)
    assert alarm["Dimensions"] == [{"Name": "Environment", "Value": "dev-eu"}]


def test_the_dashboard_shows_line_counts_malformed_payloads_and_each_log_group(synthesized):
    dashboard = only(synthesized["watching"].find_resources("AWS::CloudWatch::Dashboard"))
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in ("Log lines (prod)", "Malformed payloads", "by log group", "Logs/Processor"):
        assert title in body
    assert body.count("ErrorCount") == 1 + 3, "the total, then one line per watched group"
    assert "/aws/lambda/orders" in body


def test_each_deployment_is_smoke_tested_without_processing_logs(watching):
    hooks = watching.find_resources(
        "AWS::Lambda::Function",
        {
            "Properties": {
                "Environment": {"Variables": {"TEST_EVENT": '{"opskit": {"smokeTest": true}}'}}
            }
        },
    )
    assert len(hooks) == 1


# --- refusals -------------------------------------------------------------------------------


def fresh(profile=DEV) -> tuple[cdk.Stack, Monitoring]:
    stack = cdk.Stack(make_app(), "Fresh")
    return stack, Monitoring(stack, "Monitoring", profile=profile)


def test_it_refuses_its_own_log_group():
    stack, monitoring = fresh()
    processor = LogProcessor(stack, "Logs", profile=DEV, monitoring=monitoring)
    with pytest.raises(PropsError, match=r"Fresh/Logs: log group .* is the processor's own"):
        processor.subscribe(processor.processor.log_group)
    imported = logs.LogGroup.from_log_group_name(
        stack, "Same", processor.processor.log_group.log_group_name
    )
    with pytest.raises(PropsError, match="is the processor's own"):
        processor.subscribe(imported)


def test_it_refuses_the_log_group_of_a_function_receiving_its_alerts():
    stack, monitoring = fresh()
    receiver = OpsFunction(stack, "Pager", entry=FUNCTIONS_DIR / "smoke_test", profile=DEV)
    monitoring.critical_topic.add_subscription(subscriptions.LambdaSubscription(receiver.function))
    processor = LogProcessor(stack, "Logs", profile=DEV, monitoring=monitoring)
    with pytest.raises(PropsError, match="belongs to Fresh/Pager, which receives the processor"):
        processor.subscribe(receiver.log_group)


def test_a_loop_closed_after_subscribing_fails_at_synth():
    stack, monitoring = fresh()
    receiver = OpsFunction(stack, "Pager", entry=FUNCTIONS_DIR / "smoke_test", profile=DEV)
    LogProcessor(stack, "Logs", profile=DEV, monitoring=monitoring, log_groups=[receiver.log_group])
    monitoring.critical_topic.add_subscription(subscriptions.LambdaSubscription(receiver.alias))
    app = cdk.Stage.of(stack)
    assert app is not None
    with pytest.raises(RuntimeError, match=r"Fresh/Logs: log group .* belongs to Fresh/Pager"):
        app.synth()


def test_a_group_subscribed_twice_is_refused_by_its_name_or_its_path_while_it_has_none():
    stack, monitoring = fresh()
    processor = LogProcessor(stack, "Logs", profile=DEV, monitoring=monitoring)
    named = logs.LogGroup.from_log_group_name(stack, "Orders", "/aws/lambda/orders")
    unnamed = logs.LogGroup(stack, "Audit")
    processor.subscribe(named)
    processor.subscribe(unnamed)
    with pytest.raises(PropsError, match=r"^Fresh/Logs: log group /aws/lambda/orders is already"):
        processor.subscribe(named)
    with pytest.raises(PropsError, match=r"^Fresh/Logs: log group Fresh/Audit is already"):
        processor.subscribe(unnamed)


def subscription_ids(*, imported: bool) -> set[str]:
    """The processor's subscription filters, given /aws/lambda/legacy by name or imported."""
    stack, monitoring = fresh()
    name = "/aws/lambda/legacy"
    group = logs.LogGroup.from_log_group_name(stack, "Legacy", name) if imported else name
    LogProcessor(stack, "Logs", profile=DEV, monitoring=monitoring, log_groups=[group])
    return set(Template.from_stack(stack).find_resources("AWS::Logs::SubscriptionFilter"))


def test_a_group_passed_by_name_or_imported_by_that_name_keeps_one_subscription():
    """Moving from one form to the other must not replace the filter: the new one beside
    the old would pass CloudWatch Logs' two subscriptions per group."""
    by_name = subscription_ids(imported=False)
    assert len(by_name) == 1
    assert subscription_ids(imported=True) == by_name


def test_a_group_imported_by_name_beside_that_name_is_refused_as_subscribed_twice():
    stack, monitoring = fresh()
    imported = logs.LogGroup.from_log_group_name(stack, "Legacy", "/aws/lambda/legacy")
    processor = LogProcessor(
        stack, "Logs", profile=DEV, monitoring=monitoring, log_groups=["/aws/lambda/legacy"]
    )
    with pytest.raises(PropsError, match="log group /aws/lambda/legacy is already subscribed"):
        processor.subscribe(imported)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"monitoring": None}, "give alert_topic or monitoring"),
        (
            {"log_groups": ["/aws/lambda/a", "/aws/lambda/a"]},
            "'/aws/lambda/a' is already subscribed",
        ),
        ({"log_groups": ["bad name!"]}, "'bad name!' is not a log group name"),
        ({"error_patterns": ["ok", "("]}, r"error_patterns\[1\] '\(' is not a valid regular"),
        ({"critical_patterns": ["x" * 4000]}, "critical_patterns take 4004 bytes; Lambda allows"),
        (
            {"error_patterns": ["e" * 1600], "critical_patterns": ["c" * 1600]},
            "error_patterns and critical_patterns take 3208 bytes; Lambda allows 4 KB",
        ),
        ({"alert_window": cdk.Duration.seconds(30)}, "alert_window must be at least one minute"),
        ({"max_decompressed_bytes": 1000}, "max_decompressed_bytes must be at least 1 MiB"),
    ],
)
def test_bad_props_fail_at_synth_with_one_line_naming_the_construct(props, message):
    stack, monitoring = fresh()
    props = {"monitoring": monitoring, **props}
    with pytest.raises(PropsError, match=message) as error:
        LogProcessor(stack, "Logs", profile=DEV, **props)
    assert str(error.value).startswith("Fresh/Logs: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("profile", [DEV, PROD], ids=["dev", "prod"])
def test_cdk_nag_reports_nothing_for_a_stack_of_only_the_processor(profile):
    app = make_app()
    stack = cdk.Stack(app, "OnlyLogs")
    monitoring = Monitoring(stack, "Monitoring", profile=profile)
    LogProcessor(
        stack, "Logs", profile=profile, monitoring=monitoring, log_groups=["/aws/lambda/orders"]
    )
    report = synthesize_with_rule_packs(app, stack)
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin.get("violations", [])
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []
