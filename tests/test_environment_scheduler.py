"""EnvironmentScheduler: what the profile lets it touch, when it runs, and what it may do."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from opskit import (
    DEV,
    PROD,
    STAGING,
    EnvironmentScheduler,
    Monitoring,
    PropsError,
    SchedulerTimes,
)
from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs import environment_scheduler
from tests.scanners import synthesize_with_rule_packs
from tests.synth import make_app, only
from tests.test_ops_function import role_statements

QA = replace(PROD, name="qa", scale_down_off_hours=True)
"""Prod-like, but allowed to scale: the field decides, not the name or the base profile."""


@dataclass
class Synthesized:
    template: Template
    construct: EnvironmentScheduler


@pytest.fixture(scope="module")
def synthesized() -> dict[str, Any]:
    """Three stacks, synthesized once under cdk-nag: DEV with a customer managed EBS key,
    PROD, and a prod-like QA that does scale, with its own times and reports topic."""
    app = make_app()
    built: dict[str, EnvironmentScheduler] = {}
    stacks = {}
    for name, profile in (("dev", DEV), ("prod", PROD)):
        stack = cdk.Stack(app, name.title())
        monitoring = Monitoring(stack, "Monitoring", profile=profile)
        keys = [kms.Key(stack, "EbsKey", enable_key_rotation=True)] if name == "dev" else []
        built[name] = EnvironmentScheduler(
            stack, "Scheduler", profile=profile, monitoring=monitoring, ebs_encryption_keys=keys
        )
        stacks[name] = stack
    qa = cdk.Stack(app, "Qa")
    built["qa"] = EnvironmentScheduler(
        qa,
        "Scheduler",
        profile=QA,
        reports_topic=sns.Topic(
            qa, "Reports", enforce_ssl=True, master_key=kms.Key(qa, "K", enable_key_rotation=True)
        ),
        times=SchedulerTimes(
            time_zone=cdk.TimeZone.EUROPE_LONDON,
            week_days="MON-THU",
            scale_down_at="18:30",
            scale_up_at="06:45",
            report_day="TUE",
            report_at="09:05",
        ),
    )
    stacks["qa"] = qa
    report = synthesize_with_rule_packs(app, stacks["dev"])
    return {
        "report": report,
        **{
            name: Synthesized(Template.from_stack(stack), built[name])
            for name, stack in stacks.items()
        },
    }


def scheduler_function(template: Template) -> dict[str, Any]:
    return only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Handler": "app.lambda_handler", "Timeout": 300}},
        )
    )["Properties"]


def statements(template: Template) -> list[dict[str, Any]]:
    role_id = scheduler_function(template)["Role"]["Fn::GetAtt"][0]
    return role_statements(template, role_id)


def actions_of(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def granting(template: Template, action: str) -> dict[str, Any]:
    [statement] = [s for s in statements(template) if action in actions_of(s)]
    return statement


def schedules(template: Template) -> dict[str, dict[str, Any]]:
    """Schedules by the action their input asks for."""
    found = {}
    for schedule in template.find_resources("AWS::Scheduler::Schedule").values():
        properties = schedule["Properties"]
        found[json.loads(properties["Target"]["Input"])["action"]] = properties
    return found


def arn_text(resource: Any) -> str:
    return "".join(
        part if isinstance(part, str) else f"<{part['Ref']}>" for part in resource["Fn::Join"][1]
    )


# --- which environment, from the profile ----------------------------------------------


def test_allowed_environments_come_from_the_profile_never_from_a_name(synthesized):
    expected = {"dev": "dev", "qa": "qa", "prod": ""}
    for name, allowed in expected.items():
        variables = scheduler_function(synthesized[name].template)["Environment"]["Variables"]
        assert variables["ALLOWED_ENVIRONMENTS"] == allowed, name
        assert synthesized[name].construct.allowed_environments == ((allowed,) if allowed else ())


def test_the_built_in_profiles_scale_dev_and_staging_down_but_never_prod():
    assert (DEV.scale_down_off_hours, STAGING.scale_down_off_hours) == (True, True)
    assert PROD.scale_down_off_hours is False


def test_a_profile_that_does_not_scale_gets_only_the_weekly_report(synthesized):
    template = synthesized["prod"].template
    assert list(schedules(template)) == ["report"]
    granted = {action for s in statements(template) for action in actions_of(s)}
    assert not {a for a in granted if a.startswith("autoscaling:")}
    assert not {"ec2:StopInstances", "ec2:StartInstances"} & granted
    assert "ec2:DescribeInstances" in granted and "cloudwatch:GetMetricData" in granted
    scheduler = synthesized["prod"].construct
    assert (scheduler.scale_down_schedule, scheduler.scale_up_schedule) == (None, None)
    assert scheduler.failed_resources_alarms == {}


# --- IAM -------------------------------------------------------------------------------


def test_stopping_and_starting_instances_is_conditioned_on_the_environment_and_autoscale_tags(
    synthesized,
):
    statement = granting(synthesized["dev"].template, "ec2:StopInstances")
    assert actions_of(statement) == {"ec2:StartInstances", "ec2:StopInstances"}
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:ResourceTag/Environment": ["dev"],
            "aws:ResourceTag/AutoScale": "true",
        }
    }
    assert arn_text(statement["Resource"]) == (
        "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*"
    )


def test_auto_scaling_updates_are_conditioned_on_the_environment_tag(synthesized):
    group_arn = (
        "arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:"
        "autoScalingGroup:*:autoScalingGroupName/*"
    )
    update = granting(synthesized["qa"].template, "autoscaling:UpdateAutoScalingGroup")
    assert actions_of(update) == {"autoscaling:UpdateAutoScalingGroup"}
    assert update["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/Environment": ["qa"]}}
    assert arn_text(update["Resource"]) == group_arn
    tagging = granting(synthesized["qa"].template, "autoscaling:CreateOrUpdateTags")
    assert actions_of(tagging) == {"autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"}
    assert tagging["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/Environment": ["qa"]},
        "ForAllValues:StringEquals": {"aws:TagKeys": ["opskit:saved-capacity"]},
        "Null": {"aws:TagKeys": "false"},
    }, "it may write and delete its own tag only (some tag key required), never Environment"
    assert arn_text(tagging["Resource"]) == group_arn


def test_wildcard_resources_only_for_the_read_apis_without_resource_level_permissions(
    synthesized,
):
    for name in ("dev", "prod"):
        wildcard = [s for s in statements(synthesized[name].template) if s["Resource"] == "*"]
        reading = {"ec2:DescribeInstances", "cloudwatch:GetMetricData"}
        if name == "dev":
            reading.add("autoscaling:DescribeAutoScalingGroups")
        assert {a for s in wildcard for a in actions_of(s)} == reading | {
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
        }
        assert all("Condition" not in s for s in wildcard)


def test_instances_with_customer_managed_ebs_keys_can_be_started(synthesized):
    template = synthesized["dev"].template
    statement = granting(template, "kms:CreateGrant")
    assert statement["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": True}}
    [key_id] = [k for k in template.find_resources("AWS::KMS::Key") if k.startswith("EbsKey")]
    assert statement["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_reports_are_published_to_the_reports_topic_only(synthesized):
    for name in ("dev", "qa"):
        template = synthesized[name].template
        statement = granting(template, "sns:Publish")
        variables = scheduler_function(template)["Environment"]["Variables"]
        assert statement["Resource"] == variables["SNS_TOPIC_ARN"]
    topic = synthesized["dev"].construct.reports_topic
    assert topic is synthesized["dev"].construct.function.monitoring.reports_topic


def test_the_function_waits_for_its_permissions(synthesized):
    template = synthesized["dev"].template.to_json()["Resources"]
    [function_id] = [
        k
        for k, r in template.items()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Timeout") == 300
        and r["Properties"]["Handler"] == "app.lambda_handler"
    ]
    [policy_id] = [k for k in template if k.startswith("SchedulerPermissions")]
    assert policy_id in template[function_id]["DependsOn"]


# --- schedules -------------------------------------------------------------------------


def test_default_schedules_are_weekday_evenings_down_mornings_up_and_a_wednesday_report(
    synthesized,
):
    found = schedules(synthesized["dev"].template)
    assert {action: s["ScheduleExpression"] for action, s in found.items()} == {
        "scale_down": "cron(0 19 ? * MON-FRI *)",
        "scale_up": "cron(0 7 ? * MON-FRI *)",
        "report": "cron(0 10 ? * WED *)",
    }
    assert {s["ScheduleExpressionTimezone"] for s in found.values()} == {"Etc/UTC"}
    for action, schedule in found.items():
        assert json.loads(schedule["Target"]["Input"]) == {"action": action, "environment": "dev"}


def test_configured_times_are_local_to_their_time_zone(synthesized):
    found = schedules(synthesized["qa"].template)
    assert {action: s["ScheduleExpression"] for action, s in found.items()} == {
        "scale_down": "cron(30 18 ? * MON-THU *)",
        "scale_up": "cron(45 6 ? * MON-THU *)",
        "report": "cron(5 9 ? * TUE *)",
    }
    assert {s["ScheduleExpressionTimezone"] for s in found.values()} == {"Europe/London"}


def test_scaling_schedules_follow_the_profiles_scale_down_field_and_the_report_its_schedules(
    synthesized,
):
    """DEV keeps ordinary schedules off, but saving money out of hours is what it is for."""
    states = {
        name: {a: s["State"] for a, s in schedules(synthesized[name].template).items()}
        for name in ("dev", "qa", "prod")
    }
    assert states == {
        "dev": {"scale_down": "ENABLED", "scale_up": "ENABLED", "report": "DISABLED"},
        "qa": {"scale_down": "ENABLED", "scale_up": "ENABLED", "report": "ENABLED"},
        "prod": {"report": "ENABLED"},
    }


def test_the_schedules_invoke_the_alias_and_share_one_dead_letter_queue(synthesized):
    template = synthesized["dev"].template
    targets = [s["Target"] for s in schedules(template).values()]
    assert {t["Arn"]["Ref"] for t in targets} == {
        next(iter(template.find_resources("AWS::Lambda::Alias")))
    }
    assert len({t["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] for t in targets}) == 1
    assert set(synthesized["dev"].construct.function.dead_letter_queues) == {"async", "schedule"}


# --- function, alarms, compliance -----------------------------------------------------


def test_the_handler_contract_environment_and_smoke_test(synthesized):
    template = synthesized["qa"].template
    function = scheduler_function(template)
    variables = function["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "environment-scheduler"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "opskit"
    assert set(variables) >= {"SNS_TOPIC_ARN", "ALLOWED_ENVIRONMENTS"}
    assert len(function["Layers"]) == 2
    hook = only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"TARGET_QUALIFIER": "QA"}}}},
        )
    )["Properties"]
    assert json.loads(hook["Environment"]["Variables"]["TEST_EVENT"]) == {
        "action": "report",
        "dry_run": True,
        "environment": "qa",
    }


def test_failed_resources_alarm_on_a_metric_of_this_environment_alone(synthesized):
    for name in ("dev", "qa"):
        alarms = synthesized[name].construct.failed_resources_alarms
        assert len(alarms) == 1
        properties = only(
            synthesized[name].template.find_resources(
                "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "FailedResources"}}
            )
        )["Properties"]
        assert properties["Namespace"] == "opskit"
        assert properties["Dimensions"] == [
            {"Name": "environment", "Value": name},
            {"Name": "service", "Value": "environment-scheduler"},
        ]
        assert (properties["Threshold"], properties["Statistic"]) == (1, "Sum")
        assert properties["AlarmDescription"].startswith("[WARNING]")
        assert ("AlarmActions" in properties) == (name == "dev"), "dev's has a monitoring"


def test_cdk_nag_reports_nothing_unacknowledged(synthesized):
    failures = [
        f"{violation['ruleName']} at {c['constructPath']}"
        for plugin in synthesized["report"]["pluginReports"]
        for violation in plugin.get("violations", [])
        for c in violation["violatingConstructs"]
    ]
    assert failures == []


def test_the_tags_in_the_iam_conditions_are_the_ones_the_handler_reads():
    spec = importlib.util.spec_from_file_location(
        "env_scheduler_app", FUNCTIONS_DIR / "env_scheduler" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = handler
    spec.loader.exec_module(handler)
    assert handler.ENVIRONMENT_TAG == environment_scheduler.ENVIRONMENT_TAG
    assert (handler.AUTOSCALE_TAG, handler.AUTOSCALE_ON) == environment_scheduler.AUTOSCALE_TAG
    assert handler.SAVED_CAPACITY_TAG == environment_scheduler.SAVED_CAPACITY_TAG
    assert handler.SERVICE == environment_scheduler.SERVICE_NAME


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "give monitoring or reports_topic for the reports"),
        (
            {"times": SchedulerTimes(scale_down_at="7pm")},
            "scale_down_at '7pm' is not a 24-hour HH:MM time",
        ),
        (
            {"times": SchedulerTimes(week_days="weekdays")},
            "week_days 'weekdays' is not days such as MON-FRI",
        ),
        ({"times": SchedulerTimes(report_day="MON-FRI")}, "report_day 'MON-FRI' is not one of"),
        (
            {"times": SchedulerTimes(scale_down_at="07:00")},
            "scale_down_at and scale_up_at are both 07:00",
        ),
        (
            {"profile": PROD, "ebs_encryption_keys": ["key"]},
            "profile 'prod' does not scale down off-hours, so ebs_encryption_keys",
        ),
    ],
)
def test_bad_props_fail_at_synth_naming_the_construct(options, message):
    stack = cdk.Stack(make_app(), "Bad")
    if options.get("ebs_encryption_keys"):
        options["ebs_encryption_keys"] = [kms.Key(stack, "Key")]
    topic = None if not options else sns.Topic(stack, "Reports")
    profile = options.pop("profile", DEV)
    with pytest.raises(PropsError, match=f"^Bad/Scheduler: {message}"):
        EnvironmentScheduler(stack, "Scheduler", profile=profile, reports_topic=topic, **options)
