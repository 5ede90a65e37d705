"""OpsFunction: every resource and setting a production Lambda needs, per profile."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_scheduler as scheduler
from aws_cdk.assertions import Annotations, Match, Template
from constructs import Construct

from opskit import (
    DEV,
    PROD,
    AlarmThresholds,
    Monitoring,
    OpsFunction,
    PropsError,
    ScheduleOptions,
    Severity,
    latest_python_runtime,
)
from opskit.constructs.ops_function import VPC_NETWORKING_ACTIONS
from tests.synth import RetainEverything, bare_app, cfn_resource, make_app, only

HANDLER = "import json\n\ndef lambda_handler(event, context):\n    return {'statusCode': 200}\n"
SMOKE_EVENT = {"ping": True}


@pytest.fixture(scope="module")
def entry(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("handler")
    (folder / "app.py").write_text(HANDLER)
    return folder


@pytest.fixture(scope="module")
def synthesized(entry):
    """Three stacks synthesized once: dev defaults, a fully optioned prod function, a VPC one."""
    app = make_app()
    dev = cdk.Stack(app, "Dev")
    OpsFunction(dev, "Worker", entry=entry, profile=DEV)

    prod = cdk.Stack(app, "Prod")
    monitoring = Monitoring(prod, "Monitoring", profile=PROD, alert_emails=["ops@example.com"])
    prod_function = OpsFunction(
        prod,
        "Worker",
        entry=entry,
        profile=PROD,
        monitoring=monitoring,
        timeout=cdk.Duration.seconds(60),
        provisioned_concurrency=2,
        reserved_concurrency=10,
        smoke_test_event=SMOKE_EVENT,
        schedule=ScheduleOptions(
            expression=scheduler.ScheduleExpression.cron(
                minute="0", hour="2", time_zone=cdk.TimeZone.EUROPE_LONDON
            ),
            input={"action": "nightly"},
        ),
        alarm_thresholds=AlarmThresholds(throttles={Severity.WARNING: 3}),
    )

    vpc_stack = cdk.Stack(app, "InVpc")
    OpsFunction(
        vpc_stack,
        "Worker",
        entry=entry,
        profile=DEV,
        vpc=ec2.Vpc(vpc_stack, "Vpc", max_azs=2, restrict_default_security_group=False),
    )

    templates = {s.stack_name: Template.from_stack(s) for s in (dev, prod, vpc_stack)}
    return templates, prod_function


@pytest.fixture(scope="module")
def dev(synthesized) -> Template:
    return synthesized[0]["Dev"]


@pytest.fixture(scope="module")
def prod(synthesized) -> Template:
    return synthesized[0]["Prod"]


def main_function(template: Template) -> dict:
    functions = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Handler": "app.lambda_handler", "MemorySize": 256}},
    )
    return only(functions)["Properties"]


def test_the_runtime_is_the_latest_python_on_arm64(dev):
    properties = main_function(dev)
    assert properties["Runtime"] == latest_python_runtime().name
    assert latest_python_runtime().name >= "python3.14"
    assert properties["Architectures"] == ["arm64"]


def test_logs_are_json_at_the_profile_level_in_the_functions_own_log_group(dev, prod):
    for template, level, days, deletion in (
        (dev, "DEBUG", 7, "Delete"),
        (prod, "INFO", 30, "Retain"),
    ):
        logging_config = main_function(template)["LoggingConfig"]
        assert logging_config["LogFormat"] == "JSON"
        assert logging_config["ApplicationLogLevel"] == level
        log_group_id = logging_config["LogGroup"]["Ref"]
        log_group = template.to_json()["Resources"][log_group_id]
        assert log_group["Properties"]["RetentionInDays"] == days
        assert log_group["DeletionPolicy"] == deletion


@pytest.mark.parametrize(
    ("profile_level", "lambda_level"),
    [("DEBUG", "DEBUG"), ("INFO", "INFO"), ("WARN", "INFO"), ("ERROR", "INFO")],
)
def test_lambda_never_filters_above_info_so_metric_lines_survive(
    entry, profile_level, lambda_level
):
    """Lambda gives level-less lines (embedded-format metrics) INFO and drops them below its
    own threshold: the function's logger applies a quieter profile level itself."""
    app = make_app()
    stack = cdk.Stack(app, "Quiet")
    profile = dataclasses.replace(PROD, log_level=profile_level)
    OpsFunction(stack, "Worker", entry=entry, profile=profile)
    properties = main_function(Template.from_stack(stack))
    assert properties["LoggingConfig"]["ApplicationLogLevel"] == lambda_level
    assert properties["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == profile_level


def test_roles_may_use_the_logs_key_through_cloudwatch_logs_only(dev, prod):
    """CloudWatch Logs asks its callers for kms:ViaService access to an encrypted group's key."""
    key_id = logs_key_id(prod)
    role_id = main_function(prod)["Role"]["Fn::GetAtt"][0]
    [statement] = [
        s for s in role_statements(prod, role_id) if "kms:Encrypt" in json.dumps(s["Action"])
    ]
    assert statement["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {
                "Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".", {"Ref": "AWS::URLSuffix"}]]
            }
        }
    }
    dev_role = main_function(dev)["Role"]["Fn::GetAtt"][0]
    assert not [s for s in role_statements(dev, dev_role) if "kms:" in json.dumps(s["Action"])]


def test_async_failures_that_never_reach_the_dead_letter_queue_are_critical(dev):
    [alarm] = alarms_by_description(dev, "not delivered to the dead-letter queue").values()
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        "AWS/Lambda",
        "DestinationDeliveryFailures",
    )
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["AlarmDescription"].startswith("[CRITICAL]")


def test_log_groups_use_a_customer_key_where_the_profile_asks_and_logs_may_use_it(dev, prod):
    assert PROD.encrypt_logs and not DEV.encrypt_logs
    for group in dev.find_resources("AWS::Logs::LogGroup").values():
        assert "KmsKeyId" not in group["Properties"]
        skips = group["Metadata"]["checkov"]["skip"]
        assert [s["id"] for s in skips] == ["CKV_AWS_158"], "the choice is stated on the group"
    key_id = logs_key_id(prod)
    groups = prod.find_resources("AWS::Logs::LogGroup").values()
    assert [g["Properties"]["KmsKeyId"] for g in groups] == [{"Fn::GetAtt": [key_id, "Arn"]}] * len(
        groups
    )
    key = prod.to_json()["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    [logs_statement] = [
        s for s in key["KeyPolicy"]["Statement"] if "logs" in json.dumps(s.get("Principal", {}))
    ]
    assert logs_statement["Principal"]["Service"] == {
        "Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".", {"Ref": "AWS::URLSuffix"}]]
    }
    condition = logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert "log-group:*" in json.dumps(condition), "usable for this account's log groups only"


def test_the_stacks_logs_key_is_kept_when_any_log_group_under_it_is(entry):
    """A stack of two environments, the first disposable: deleting the stack must not
    schedule the key's deletion while a retained log group still needs it."""
    disposable = dataclasses.replace(DEV, name="qa", encrypt_logs=True)
    stack = cdk.Stack(make_app(), "Mixed")
    OpsFunction(stack, "Scratch", entry=entry, profile=disposable)
    OpsFunction(stack, "Kept", entry=entry, profile=PROD)
    template = Template.from_stack(stack)
    key = template.to_json()["Resources"][logs_key_id(template)]
    assert (key["DeletionPolicy"], key["UpdateReplacePolicy"]) == ("Retain", "Retain")


def logs_key_id(template: Template) -> str:
    [key_id] = template.find_resources(
        "AWS::KMS::Key", {"Properties": {"Description": Match.string_like_regexp("log groups")}}
    )
    return key_id


def test_every_log_group_has_a_retention(dev, prod):
    for template in (dev, prod):
        for log_group in template.find_resources("AWS::Logs::LogGroup").values():
            assert log_group["Properties"]["RetentionInDays"] > 0


def test_xray_tracing_is_active(dev):
    assert main_function(dev)["TracingConfig"] == {"Mode": "Active"}


def test_a_version_is_published_and_the_alias_is_named_after_the_environment(dev, prod):
    dev.resource_count_is("AWS::Lambda::Version", 1)
    dev.has_resource_properties("AWS::Lambda::Alias", {"Name": "DEV"})
    prod.has_resource_properties(
        "AWS::Lambda::Alias",
        {"Name": "PROD", "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}},
    )
    assert main_function(prod)["ReservedConcurrentExecutions"] == 10


def test_async_failures_retry_then_land_in_an_encrypted_ssl_only_dead_letter_queue(dev):
    config = only(dev.find_resources("AWS::Lambda::EventInvokeConfig"))["Properties"]
    assert config["Qualifier"]["Fn::Select"][1]["Fn::Split"][1]["Ref"].startswith("WorkerAlias")
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 3600
    queue_id = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    queue = dev.to_json()["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    dev.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def role_statements(template: Template, role_id: str) -> list[dict]:
    """Every statement of the policies attached to the role `role_id`."""
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def alarms_by_description(template: Template, text: str) -> dict[str, dict]:
    """Severity alarms whose description mentions `text`, by severity."""
    found = {}
    for alarm in template.find_resources("AWS::CloudWatch::Alarm").values():
        description = alarm["Properties"]["AlarmDescription"]
        severity = description.split("]")[0].strip("[")
        if text in description and severity in ("WARNING", "CRITICAL"):
            found[severity] = alarm["Properties"]
    return found


def test_error_rate_alarms_warn_above_5_and_are_critical_above_10_percent(dev):
    alarms = alarms_by_description(dev, "error rate")
    assert {severity: a["Threshold"] for severity, a in alarms.items()} == {
        "WARNING": 5,
        "CRITICAL": 10,
    }
    expression = next(m for m in alarms["CRITICAL"]["Metrics"] if "Expression" in m)
    assert expression["Expression"] == "IF(invocations > 0, 100 * errors / invocations, 0)"


def test_duration_alarms_are_50_and_80_percent_of_the_timeout(dev, prod):
    assert {s: a["Threshold"] for s, a in alarms_by_description(dev, "p99 duration").items()} == {
        "WARNING": 15_000,
        "CRITICAL": 24_000,
    }
    assert {s: a["Threshold"] for s, a in alarms_by_description(prod, "p99 duration").items()} == {
        "WARNING": 30_000,
        "CRITICAL": 48_000,
    }


def test_throttle_thresholds_default_to_10_and_50_and_can_be_overridden(dev, prod):
    assert {s: a["Threshold"] for s, a in alarms_by_description(dev, "throttled").items()} == {
        "WARNING": 10,
        "CRITICAL": 50,
    }
    assert {s: a["Threshold"] for s, a in alarms_by_description(prod, "throttled").items()} == {
        "WARNING": 3
    }


def test_alarm_actions_follow_the_profile_and_notify_the_severitys_topic(dev, prod):
    assert all(not a["ActionsEnabled"] for a in alarms_by_description(dev, "").values())
    assert all(a.get("AlarmActions") is None for a in alarms_by_description(dev, "").values())
    topics = prod.find_resources("AWS::SNS::Topic")
    critical_topic = next(
        t for t, r in topics.items() if "critical" in r["Properties"]["DisplayName"]
    )
    critical = alarms_by_description(prod, "error rate")["CRITICAL"]
    assert critical["ActionsEnabled"] is True
    assert critical["AlarmActions"] == [{"Ref": critical_topic}]


def test_dead_letter_queue_depth_is_alarmed(prod):
    queue_alarms = [
        a["Properties"]
        for a in prod.find_resources("AWS::CloudWatch::Alarm").values()
        if "waiting in the" in a["Properties"]["AlarmDescription"]
    ]
    assert len(queue_alarms) == 2, "the async DLQ and the schedule's DLQ"
    for alarm in queue_alarms:
        assert alarm["AlarmDescription"].startswith("[CRITICAL]")
        assert (alarm["Namespace"], alarm["Threshold"]) == ("AWS/SQS", 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_codedeploy_shifts_traffic_by_the_profile_strategy_and_rolls_back_when_the_new_version_errs(
    dev, prod
):
    for template, config in (
        (dev, "CodeDeployDefault.LambdaAllAtOnce"),
        (prod, "CodeDeployDefault.LambdaCanary10Percent5Minutes"),
    ):
        group = only(template.find_resources("AWS::CodeDeploy::DeploymentGroup"))["Properties"]
        assert group["DeploymentConfigName"] == config
        assert group["AutoRollbackConfiguration"]["Enabled"] is True
        assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
        [alarm] = group["AlarmConfiguration"]["Alarms"]
        alarm_id = alarm["Name"]["Ref"]
        rollback_alarm = template.to_json()["Resources"][alarm_id]["Properties"]
        assert (rollback_alarm["MetricName"], rollback_alarm["Period"]) == ("Errors", 60)
        assert (rollback_alarm["Threshold"], rollback_alarm["EvaluationPeriods"]) == (0, 1)
        dimensions = {d["Name"]: d["Value"] for d in rollback_alarm["Dimensions"]}
        assert set(dimensions) == {"FunctionName", "Resource", "ExecutedVersion"}
        version_id = dimensions["ExecutedVersion"]["Fn::GetAtt"][0]
        assert template.to_json()["Resources"][version_id]["Type"] == "AWS::Lambda::Version"
        alias = only(template.find_resources("AWS::Lambda::Alias"))
        assert "CodeDeployLambdaAliasUpdate" in alias["UpdatePolicy"]


def test_the_alias_waits_for_codedeploys_policy_the_new_alarm_and_the_deployment_group(prod):
    """CodeDeploy acts during the alias update: everything it uses must be in place first."""
    alias = only(prod.find_resources("AWS::Lambda::Alias"))
    [group_id] = prod.find_resources("AWS::CodeDeploy::DeploymentGroup")
    group = prod.to_json()["Resources"][group_id]["Properties"]
    role_id = group["ServiceRoleArn"]["Fn::GetAtt"][0]
    [policy_id] = [
        policy_id
        for policy_id, p in prod.find_resources("AWS::IAM::Policy").items()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    [alarm] = group["AlarmConfiguration"]["Alarms"]
    assert {role_id, policy_id, group_id, alarm["Name"]["Ref"]} <= set(alias["DependsOn"])


def rollback_alarm_of(template: Template) -> dict:
    return only(
        template.find_resources(
            "AWS::CloudWatch::Alarm",
            {"Properties": {"AlarmDescription": Match.string_like_regexp(r"^\[DEPLOYMENT\]")}},
        )
    )["Properties"]


def test_each_version_gets_a_fresh_rollback_alarm(entry, tmp_path, prod):
    """AlarmName is create-only and names the version: a new version replaces the alarm, which
    starts in INSUFFICIENT_DATA instead of carrying the old version's ALARM into the fix."""
    name = rollback_alarm_of(prod)["AlarmName"]["Fn::Join"][1]
    version_id = next(
        part["Fn::GetAtt"][0] for part in name if isinstance(part, dict) and "Fn::GetAtt" in part
    )
    assert prod.to_json()["Resources"][version_id]["Type"] == "AWS::Lambda::Version"

    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "app.py").write_text(HANDLER + "# the fix\n")
    names = []
    for code in (entry, fixed):
        app = make_app()
        stack = cdk.Stack(app, "Prod")
        OpsFunction(stack, "Worker", entry=code, profile=PROD)
        names.append(rollback_alarm_of(Template.from_stack(stack))["AlarmName"])
    assert names[0] != names[1]


def test_the_post_traffic_hook_smoke_tests_the_new_version(prod):
    alias = only(prod.find_resources("AWS::Lambda::Alias"))
    hook_ref = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["AfterAllowTrafficHook"]["Ref"]
    hook = prod.to_json()["Resources"][hook_ref]["Properties"]
    variables = hook["Environment"]["Variables"]
    assert variables["TARGET_QUALIFIER"] == "PROD"
    assert json.loads(variables["TEST_EVENT"]) == SMOKE_EVENT
    statements = role_statements(prod, hook["Role"]["Fn::GetAtt"][0])
    actions = {s["Action"] for s in statements if isinstance(s["Action"], str)}
    assert {"lambda:InvokeFunction", "codedeploy:PutLifecycleEventHookExecutionStatus"} <= actions
    invoke = next(s for s in statements if s["Action"] == "lambda:InvokeFunction")
    assert invoke["Resource"]["Fn::Join"][1][-1] == ":PROD", "invokes the alias, not every version"
    configs = prod.find_resources(
        "AWS::Lambda::EventInvokeConfig",
        {"Properties": {"FunctionName": {"Ref": hook_ref}}},
    )
    assert [c["Properties"]["MaximumRetryAttempts"] for c in configs.values()] == [0], (
        "an answered hook is never run again by an async retry"
    )
    assert [c["Properties"]["MaximumEventAgeInSeconds"] for c in configs.values()] == [3600], (
        "CodeDeploy has given up on a hook that has not answered within an hour"
    )


def test_a_function_may_invoke_anothers_alias_without_a_dependency_cycle(entry):
    """Each alias waits only for its own function's deployment resources, so a dispatcher
    naming a worker's alias (variable and grant) closes no loop: a deployment resource
    shared by the stack's functions (one role, one hook) would, and CloudFormation refuses
    a template with a cycle, as `Template.from_stack` does."""
    stack = cdk.Stack(make_app(), "Calls")
    worker = OpsFunction(stack, "Worker", entry=entry, profile=PROD, smoke_test_event={"n": 1})
    dispatcher = OpsFunction(
        stack,
        "Dispatcher",
        entry=entry,
        profile=PROD,
        smoke_test_event={"n": 2},
        environment={"WORKER": worker.alias.function_arn},
    )
    worker.alias.grant_invoke(dispatcher.function)
    template = Template.from_stack(stack)
    role_id = stack.resolve(cfn_resource(dispatcher.role, iam.CfnRole).logical_id)
    invokes = [
        s for s in role_statements(template, role_id) if s["Action"] == "lambda:InvokeFunction"
    ]
    assert invokes, "the dispatcher may invoke the worker's alias"


def test_functions_of_one_stack_running_one_handler_folder_share_its_asset(entry):
    app = make_app()
    stacks = [cdk.Stack(app, name) for name in ("One", "Other")]
    for stack in stacks:
        for id in ("First", "Second"):
            OpsFunction(stack, id, entry=entry, profile=DEV, smoke_test_event=SMOKE_EVENT)
    for stack in stacks:
        assets = [c for c in stack.node.find_all() if isinstance(c, s3_assets.Asset)]
        assert len(assets) == 2, "one for the handler folder, one for the smoke tests"
        code = {
            json.dumps(f["Properties"]["Code"], sort_keys=True)
            for f in Template.from_stack(stack).find_resources("AWS::Lambda::Function").values()
        }
        assert len(code) == 2


def test_the_schedule_targets_the_alias_in_its_time_zone_with_its_own_dlq(prod, dev):
    schedule = only(prod.find_resources("AWS::Scheduler::Schedule"))["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/London"
    assert schedule["State"] == "ENABLED"
    target = schedule["Target"]
    assert target["Arn"]["Ref"].startswith("WorkerAlias")
    assert json.loads(target["Input"]) == {"action": "nightly"}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 2}
    assert "DeadLetterConfig" in target
    dev.resource_count_is("AWS::Scheduler::Schedule", 0)


def test_a_schedule_follows_the_profile_unless_told(entry):
    app = make_app()
    stack = cdk.Stack(app, "Scheduled")
    hourly = scheduler.ScheduleExpression.rate(cdk.Duration.hours(1))
    for id, enabled in (("Inherits", None), ("Forced", True)):
        OpsFunction(
            stack,
            id,
            entry=entry,
            profile=DEV,
            schedule=ScheduleOptions(expression=hourly, enabled=enabled),
        )
    states = {
        schedule["Properties"]["Target"]["Arn"]["Ref"][:6]: schedule["Properties"]["State"]
        for schedule in Template.from_stack(stack)
        .find_resources("AWS::Scheduler::Schedule")
        .values()
    }
    assert states == {"Inheri": "DISABLED", "Forced": "ENABLED"}


def test_more_schedules_are_added_on_the_alias_and_share_one_dead_letter_queue(entry):
    app = make_app()
    stack = cdk.Stack(app, "Several")
    hourly = scheduler.ScheduleExpression.rate(cdk.Duration.hours(1))
    nightly = scheduler.ScheduleExpression.cron(minute="0", hour="2")
    first = OpsFunction(
        stack, "First", entry=entry, profile=PROD, schedule=ScheduleOptions(expression=hourly)
    )
    added = first.add_schedule("Nightly", ScheduleOptions(expression=nightly, input={"n": 1}))
    later = OpsFunction(stack, "Later", entry=entry, profile=PROD)
    assert later.schedule_dead_letter_queue is None
    later.add_schedule("Hourly", ScheduleOptions(expression=hourly))

    template = Template.from_stack(stack)
    queues_by_schedule = {
        logical_id: schedule["Properties"]["Target"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for logical_id, schedule in template.find_resources("AWS::Scheduler::Schedule").items()
    }
    assert sorted(id[:-8] for id in queues_by_schedule) == [
        "FirstNightly",
        "FirstSchedule",
        "LaterHourly",
    ], "schedule= keeps its logical id"
    assert {queue[:-8] for queue in queues_by_schedule.values()} == {
        "FirstScheduleDeadLetterQueue",
        "LaterScheduleDeadLetterQueue",
    }
    assert first.schedules == {"Schedule": first.schedule, "Nightly": added}
    assert set(first.dead_letter_queues) == set(later.dead_letter_queues) == {"async", "schedule"}


def test_no_role_has_an_aws_managed_policy(synthesized):
    for template in synthesized[0].values():
        for role in template.find_resources("AWS::IAM::Role").values():
            assert "ManagedPolicyArns" not in role["Properties"]


def test_wildcard_resources_only_for_apis_without_resource_level_permissions_or_read_only(
    synthesized,
):
    allowed = {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "cloudwatch:DescribeAlarms",
        *VPC_NETWORKING_ACTIONS,
    }
    for template in synthesized[0].values():
        for policy in template.find_resources("AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Resource"] == "*":
                    actions = statement["Action"]
                    assert set([actions] if isinstance(actions, str) else actions) <= allowed


def test_codedeploy_gets_an_inline_role_scoped_to_the_alias_reading_alarms_as_aws_grants_it(
    prod,
):
    group = only(prod.find_resources("AWS::CodeDeploy::DeploymentGroup"))["Properties"]
    role_id = group["ServiceRoleArn"]["Fn::GetAtt"][0]
    role = prod.to_json()["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "codedeploy.amazonaws.com"
    }
    actions = {
        action
        for s in role_statements(prod, role_id)
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "lambda:GetAlias",
        "lambda:UpdateAlias",
        "lambda:GetProvisionedConcurrencyConfig",
        "cloudwatch:DescribeAlarms",
        "lambda:InvokeFunction",
    }
    [describe] = [
        s for s in role_statements(prod, role_id) if s["Action"] == "cloudwatch:DescribeAlarms"
    ]
    assert describe["Resource"] == "*", "a denied alarm poll would fail every deployment"


def test_a_function_in_a_vpc_gets_private_subnets_and_its_own_security_group(synthesized):
    template = synthesized[0]["InVpc"]
    vpc_config = main_function(template)["VpcConfig"]
    assert len(vpc_config["SubnetIds"]) == 2
    [security_group] = vpc_config["SecurityGroupIds"]
    assert security_group["Fn::GetAtt"][0].startswith("WorkerSecurityGroup")


def test_only_a_function_in_a_vpc_may_manage_network_interfaces(synthesized, dev):
    """Lambda refuses to create a VPC function whose role cannot create its ENIs."""

    def function_role_actions(template: Template) -> set[str]:
        role_id = main_function(template)["Role"]["Fn::GetAtt"][0]
        return {
            action
            for s in role_statements(template, role_id)
            for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        }

    assert set(VPC_NETWORKING_ACTIONS) <= function_role_actions(synthesized[0]["InVpc"])
    assert not set(VPC_NETWORKING_ACTIONS) & function_role_actions(dev)


def test_public_attributes_expose_every_resource(synthesized):
    function = synthesized[1]
    for attribute in (
        "function",
        "alias",
        "version",
        "role",
        "log_group",
        "dead_letter_queue",
        "deployment_group",
        "deployment_role",
        "smoke_test_function",
        "smoke_test_role",
        "smoke_test_log_group",
        "schedule",
        "schedule_dead_letter_queue",
        "rollback_alarm",
    ):
        assert getattr(function, attribute) is not None, attribute
    assert set(function.alarms) == {
        "error_rate",
        "duration",
        "throttles",
        "lost_async_failures",
        "async_dead_letters",
        "schedule_dead_letters",
    }
    assert set(function.dead_letter_queues) == {"async", "schedule"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_attempts": 3}, "retry_attempts must be 0-2, got 3"),
        ({"retry_attempts": -1}, "retry_attempts must be 0-2, got -1"),
        ({"security_groups": []}, "vpc_subnets and security_groups need a vpc"),
        (
            {"timeout": cdk.Duration.minutes(15), "smoke_test_event": {}},
            "a smoke-tested function may time out after 870 s at most, got 900 s",
        ),
        (
            {"reserved_concurrency": 2, "provisioned_concurrency": 3},
            "provisioned concurrency 3 exceeds the reserved concurrency 2",
        ),
        (
            {"reserved_concurrency": 0, "provisioned_concurrency": 1},
            "provisioned concurrency 1 exceeds the reserved concurrency 0",
        ),
    ],
)
def test_bad_prop_combinations_fail_at_synth_with_a_clear_message(entry, options, message):
    stack = cdk.Stack(make_app(), "Bad")
    with pytest.raises(PropsError, match=message):
        OpsFunction(stack, "Worker", entry=entry, profile=DEV, **options)


def test_the_limits_themselves_are_allowed(entry):
    stack = cdk.Stack(make_app(), "AtTheLimits")
    limits: dict[str, dict[str, Any]] = {
        "NoRetries": {"retry_attempts": 0},
        "TwoRetries": {"retry_attempts": 2},
        "LongestSmokeTested": {"timeout": cdk.Duration.seconds(870), "smoke_test_event": {}},
        "AllProvisioned": {"reserved_concurrency": 3, "provisioned_concurrency": 3},
    }
    for id, options in limits.items():
        assert OpsFunction(stack, id, entry=entry, profile=DEV, **options).function is not None


def test_a_missing_handler_folder_is_named(tmp_path):
    stack = cdk.Stack(make_app(), "Missing")
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        OpsFunction(stack, "Worker", entry=tmp_path / "does-not-exist", profile=DEV)


def test_a_relative_handler_folder_is_found_after_the_app_changes_directory(tmp_path, monkeypatch):
    """The jsii runtime keeps the directory the app started in: an app that changes
    directory (to its own folder, say) still gets the handler folder it names."""
    folder = tmp_path / "handlers" / "nightly"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(HANDLER)
    monkeypatch.chdir(tmp_path)
    stack = cdk.Stack(make_app(), "Relative")
    OpsFunction(stack, "Nightly", entry="handlers/nightly", profile=DEV)
    staged = {
        Path(staging.source_path)
        for staging in stack.node.find_all()
        if isinstance(staging, cdk.AssetStaging)
    }
    assert folder in staged


DESCRIPTION_RULES: dict[tuple[str, str], tuple[re.Pattern[str], int]] = {
    ("AWS::EC2::SecurityGroup", "GroupDescription"): (
        re.compile(r"[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*"),
        255,
    ),
    ("AWS::IAM::Role", "Description"): (re.compile("[\t\n\r\x20-\x7e\xa1-\xff]*"), 1000),
    ("AWS::Lambda::Function", "Description"): (re.compile(".*", re.DOTALL), 256),
    ("AWS::CloudWatch::Alarm", "AlarmDescription"): (re.compile(".*", re.DOTALL), 1024),
    ("AWS::Scheduler::Schedule", "Description"): (re.compile(".*", re.DOTALL), 512),
}
"""Each description field's characters and length as the AWS APIs behind it document them
(EC2 CreateSecurityGroup, IAM CreateRole, Lambda CreateFunction, CloudWatch PutMetricAlarm,
EventBridge Scheduler CreateSchedule)."""


def refused_descriptions(template: Template) -> list[str]:
    """Every description in `template` that its field's pattern or length limit refuses."""
    refused = []
    for (type_, field), (pattern, limit) in DESCRIPTION_RULES.items():
        for logical_id, resource in template.find_resources(type_).items():
            text = resource["Properties"].get(field)
            if text is None:
                continue
            assert isinstance(text, str), f"{logical_id}.{field} is not literal text"
            if not pattern.fullmatch(text) or len(text) > limit:
                refused.append(f"{logical_id}.{field} ({len(text)} characters): {text!r}")
    return refused


def everything_described(entry: Path, stack: cdk.Stack, scope: Construct, *ids: str) -> Template:
    """Functions in a VPC, smoke-tested and scheduled: every resource whose description
    OpsFunction builds from its id or path."""
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1, restrict_default_security_group=False)
    for id in ids:
        OpsFunction(
            scope,
            id,
            entry=entry,
            profile=DEV,
            vpc=vpc,
            smoke_test_event=SMOKE_EVENT,
            schedule=ScheduleOptions(
                expression=scheduler.ScheduleExpression.rate(cdk.Duration.hours(1))
            ),
        )
    return Template.from_stack(stack)


def test_functions_with_any_characters_in_their_ids_get_descriptions_aws_accepts(entry):
    """CDK takes any characters in an id, CloudFormation does not in every description: a
    security group's refuses all but a few ASCII signs at deploy, and is create-only."""
    stack = cdk.Stack(make_app(), "Unusual")
    ids = ["Nightly\u2013Report", "夜間バッチ", "Nightly's report", "Report?v2", "Nightlyété"]
    template = everything_described(entry, stack, stack, *ids)
    assert len(template.find_resources("AWS::EC2::SecurityGroup")) == len(ids)
    assert refused_descriptions(template) == []


def test_a_long_stack_name_and_path_still_give_descriptions_aws_accepts(entry):
    """A stack name of the 128 characters CloudFormation allows, and a deep path, make the
    smoke test's description longer than Lambda's 256: CDK would fail synthesis without
    naming the construct."""
    stack = cdk.Stack(make_app(), "Long", stack_name="Reporting" + "x" * 119)
    team = Construct(stack, "NightlyReportingTeam" * 5)
    template = everything_described(entry, stack, team, "NightlyReport" * 90)
    assert refused_descriptions(template) == []
    hook = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Description": Match.string_like_regexp("^Post-traffic smoke test of")}},
    )
    assert only(hook)["Properties"]["Description"].endswith("...")


def test_a_schedule_description_the_caller_gives_is_cut_to_schedulers_512(entry):
    """Backup and the user metrics job describe their schedules by their path."""
    stack = cdk.Stack(make_app(), "Described")
    OpsFunction(
        stack,
        "Nightly",
        entry=entry,
        profile=DEV,
        schedule=ScheduleOptions(
            expression=scheduler.ScheduleExpression.rate(cdk.Duration.hours(1)),
            description="Nightly report of a deeply nested team " * 20,
        ),
    )
    [schedule] = Template.from_stack(stack).find_resources("AWS::Scheduler::Schedule").values()
    description = schedule["Properties"]["Description"]
    assert len(description) == 512 and description.endswith("...")


def test_a_change_to_a_layer_alone_publishes_a_version_even_where_the_app_lacks_cdks_flag(
    tmp_path, entry
):
    """Without `@aws-cdk/aws-lambda:recognizeLayerVersion` (apps made before CDK 2.27), a
    new common or Powertools layer would publish no version: the alias and CodeDeploy would
    stay on the old one."""
    versions = []
    for release in ("one", "two"):
        folder = tmp_path / release / "python"
        folder.mkdir(parents=True)
        (folder / "shared.py").write_text(f"RELEASE = {release!r}\n")
        stack = cdk.Stack(bare_app(), "Consumer")
        layer = lambda_.LayerVersion(
            stack, "Shared", code=lambda_.Code.from_asset(str(tmp_path / release))
        )
        OpsFunction(stack, "Worker", entry=entry, profile=DEV, layers=[layer])
        versions.append(set(Template.from_stack(stack).find_resources("AWS::Lambda::Version")))
    assert len(versions[0]) == 1 and versions[0] != versions[1]


@pytest.mark.parametrize("retained", [True, False])
def test_a_rollback_alarm_kept_on_replacement_is_warned_of(entry, retained):
    """A retain-everything Aspect would leave each version's alarm behind at every deploy."""
    app = make_app()
    stack = cdk.Stack(app, "Kept")
    OpsFunction(stack, "Job", entry=entry, profile=DEV)
    if retained:
        cdk.Aspects.of(app).add(RetainEverything())
    warnings = Annotations.from_stack(stack).find_warning(
        "*", Match.string_like_regexp("rollback alarm is retained on replacement")
    )
    expected = ["/Kept/Job/DeploymentErrorsAlarm"] if retained else []
    assert [w.id for w in warnings] == expected
