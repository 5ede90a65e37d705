"""SnapshotCleanup: what the cleanup may delete, when it runs, where it reports and alarms."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from opskit_common.tags import BACKUP_OWNERSHIP_TAGS, PERMANENT_TAG

from opskit import (
    DEV,
    PROD,
    CleanupScope,
    Monitoring,
    PropsError,
    Severity,
    SnapshotCleanup,
)
from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs import snapshot_cleanup
from opskit.constructs.snapshot_cleanup import weekly
from tests.scanners import synthesize_with_rule_packs
from tests.synth import dashboard_text, full_width_row, make_app, only

SNAPSHOT_ARN = {
    "Fn::Join": [
        "",
        ["arn:", {"Ref": "AWS::Partition"}, ":ec2:", {"Ref": "AWS::Region"}, "::snapshot/*"],
    ]
}


@pytest.fixture(scope="module")
def templates() -> dict[str, Any]:
    """Both stacks synthesized once, under cdk-nag's AwsSolutions and Serverless packs."""
    app = make_app()
    owned = cdk.Stack(app, "Owned")
    SnapshotCleanup(
        owned, "Cleanup", profile=DEV, monitoring=Monitoring(owned, "Monitoring", profile=DEV)
    )
    everything = cdk.Stack(app, "Everything")
    SnapshotCleanup(
        everything,
        "Cleanup",
        profile=PROD,
        reports_topic=sns.Topic(
            everything,
            "Reports",
            enforce_ssl=True,
            master_key=kms.Key(everything, "ReportsKey", enable_key_rotation=True),
        ),
        environment_name="qa",
        retention_days=1,
        cleanup_scope=CleanupScope.ALL,
        min_keep_per_volume=0,
        schedule=weekly(week_day="SAT", hour=4, time_zone=cdk.TimeZone.EUROPE_LONDON),
        schedule_enabled=False,
        dry_run=True,
        timeout=cdk.Duration.minutes(5),
        failed_deletions={Severity.CRITICAL: 5},
    )
    report = synthesize_with_rule_packs(app, owned)
    return {
        "owned": Template.from_stack(owned),
        "all": Template.from_stack(everything),
        "nag": report,
    }


def cleaner(template: Template) -> dict[str, Any]:
    return only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"SCOPE": Match.any_value()}}}},
        )
    )


def role_statements(template: Template) -> list[dict[str, Any]]:
    role_id = cleaner(template)["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def ec2_statements(template: Template) -> dict[str, dict[str, Any]]:
    found = {}
    for statement in role_statements(template):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if any(a.startswith("ec2:") for a in actions):
            found[statement["Sid"]] = statement
    return found


def test_the_construct_knows_the_ownership_and_permanent_tags_the_functions_use():
    assert dict(BACKUP_OWNERSHIP_TAGS) == snapshot_cleanup.OWNERSHIP_TAGS
    assert snapshot_cleanup.PERMANENT_TAG == PERMANENT_TAG


def test_with_scope_owned_only_this_environments_backups_may_be_deleted(templates):
    statements = ec2_statements(templates["owned"])
    assert set(statements) == {"ListSnapshotsAndImages", "DeleteExpiredSnapshots"}
    delete = statements["DeleteExpiredSnapshots"]
    assert delete["Action"] == "ec2:DeleteSnapshot"
    assert delete["Resource"] == SNAPSHOT_ARN
    assert delete["Condition"] == {
        "StringEquals": {
            "ec2:ResourceTag/AutomatedBackup": "true",
            "ec2:ResourceTag/CreatedBy": "opskit-backup",
            "ec2:ResourceTag/Environment": "dev",
        },
        "StringNotEqualsIgnoreCase": {"ec2:ResourceTag/Retention": "permanent"},
    }


def test_scope_all_widens_the_delete_to_every_snapshot_of_every_environment_not_permanent(
    templates,
):
    delete = ec2_statements(templates["all"])["DeleteExpiredSnapshots"]
    assert delete["Resource"] == SNAPSHOT_ARN
    assert delete["Condition"] == {
        "StringNotEqualsIgnoreCase": {"ec2:ResourceTag/Retention": "permanent"}
    }


def test_listing_is_the_only_ec2_permission_on_every_resource(templates):
    for template in templates.values():
        if not isinstance(template, Template):
            continue
        listing = ec2_statements(template)["ListSnapshotsAndImages"]
        assert sorted(listing["Action"]) == [
            "ec2:DescribeImages",
            "ec2:DescribeLockedSnapshots",
            "ec2:DescribeSnapshots",
        ]
        assert listing["Resource"] == "*" and "Condition" not in listing


def test_run_reports_go_to_the_monitoring_reports_topic_under_its_key(templates):
    template = templates["owned"]
    [reports] = [
        logical_id
        for logical_id, topic in template.find_resources("AWS::SNS::Topic").items()
        if topic["Properties"]["DisplayName"].endswith("reports")
    ]
    variables = cleaner(template)["Properties"]["Environment"]["Variables"]
    assert variables["SNS_TOPIC_ARN"] == {"Ref": reports}
    statements = role_statements(template)
    assert {"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": reports}} in statements
    key = next(iter(template.find_resources("AWS::KMS::Key")))
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [key, "Arn"]},
    } in statements


def test_the_handler_settings_come_from_the_props(templates):
    owned = cleaner(templates["owned"])["Properties"]
    assert owned["Handler"] == "app.lambda_handler"
    assert owned["Timeout"] == 840
    assert {k: v for k, v in owned["Environment"]["Variables"].items() if k != "SNS_TOPIC_ARN"} == {
        "RETENTION_DAYS": "30",
        "SCOPE": "owned",
        "MIN_KEEP_PER_VOLUME": "1",
        "ENVIRONMENT": "dev",
        "POWERTOOLS_METRICS_NAMESPACE": "opskit",
        "POWERTOOLS_SERVICE_NAME": "snapshot-cleanup",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",
    }
    everything = cleaner(templates["all"])["Properties"]
    variables = everything["Environment"]["Variables"]
    assert (variables["RETENTION_DAYS"], variables["SCOPE"], variables["MIN_KEEP_PER_VOLUME"]) == (
        "1",
        "all",
        "0",
    ), "the least retention, and no snapshot kept per volume"
    assert variables["ENVIRONMENT"] == "qa", "environment_name, not the profile's name"
    assert everything["Timeout"] == 300, "the shortest timeout"


def test_it_runs_weekly_on_sundays_at_three_utc_enabled_by_the_profile(templates):
    schedule = only(templates["owned"].find_resources("AWS::Scheduler::Schedule"))["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 3 ? * SUN *)"
    assert schedule["ScheduleExpressionTimezone"] == "Etc/UTC"
    assert schedule["State"] == "DISABLED", "the dev profile turns schedules off"
    assert json.loads(schedule["Target"]["Input"]) == {"dry_run": False}
    assert "Alias" in schedule["Target"]["Arn"]["Ref"]


def test_the_schedule_its_time_zone_state_and_a_dry_run_are_configurable(templates):
    schedule = only(templates["all"].find_resources("AWS::Scheduler::Schedule"))["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 4 ? * SAT *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/London"
    assert schedule["State"] == "DISABLED", "overrides the prod profile"
    assert json.loads(schedule["Target"]["Input"]) == {"dry_run": True}


def failed_deletion_alarms(template: Template) -> list[dict[str, Any]]:
    return [
        alarm["Properties"]
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "FailedDeletions"
    ]


def test_failed_deletions_alarm_on_this_environments_metric(templates):
    [alarm] = failed_deletion_alarms(templates["owned"])
    assert alarm["Namespace"] == "opskit"
    assert sorted(alarm["Dimensions"], key=lambda d: d["Name"]) == [
        {"Name": "environment", "Value": "dev"},
        {"Name": "service", "Value": "snapshot-cleanup"},
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["AlarmDescription"].startswith("[WARNING]")
    assert alarm["ActionsEnabled"] is False, "the dev profile keeps alarm actions off"
    warning_topic = alarm["AlarmActions"][0]["Ref"]
    topic = templates["owned"].to_json()["Resources"][warning_topic]
    assert topic["Properties"]["DisplayName"] == "opskit dev warning alerts"

    [critical] = failed_deletion_alarms(templates["all"])
    assert (critical["Threshold"], critical["ActionsEnabled"]) == (5, True)
    assert {"Name": "environment", "Value": "qa"} in critical["Dimensions"]
    assert critical["AlarmDescription"].startswith("[CRITICAL]")


def test_the_dashboard_draws_deleted_and_failed_snapshots(templates):
    dashboard = only(templates["owned"].find_resources("AWS::CloudWatch::Dashboard"))
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "Snapshot cleanup" in body
    assert "DeletedSnapshots" in body and "FailedDeletions" in body
    assert full_width_row("Snapshot cleanup").search(dashboard_text(templates["owned"])), (
        "a full-width row, six units high"
    )


def test_each_deployment_is_smoke_tested_without_deleting(templates):
    hooks = templates["owned"].find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {"TARGET_QUALIFIER": "DEV"}}}},
    )
    variables = only(hooks)["Properties"]["Environment"]["Variables"]
    assert variables["TEST_EVENT"] == '{"opskit": {"smokeTest": true}}'


def test_cdk_nag_reports_nothing_unacknowledged(templates):
    findings = [
        f"{violation['ruleName']} at {c['constructPath']}"
        for plugin in templates["nag"]["pluginReports"]
        for violation in plugin.get("violations", [])
        for c in violation["violatingConstructs"]
    ]
    assert findings == []


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"retention_days": 0}, "retention_days must be >= 1, got 0"),
        ({"min_keep_per_volume": -1}, "min_keep_per_volume must be >= 0, got -1"),
        ({"timeout": cdk.Duration.minutes(15)}, "timeout must be at most 870 seconds, got 900"),
        ({"timeout": cdk.Duration.seconds(871)}, "timeout must be at most 870 seconds, got 871"),
        ({"timeout": cdk.Duration.minutes(4)}, "timeout must be at least 300 seconds, got 240"),
        ({"environment_name": " "}, "environment_name must not be empty"),
        ({"monitoring": None}, "give monitoring or reports_topic for run reports"),
    ],
)
def test_bad_props_fail_at_synth_naming_the_construct(props, message):
    stack = cdk.Stack(make_app(), "Bad")
    values = {"monitoring": Monitoring(stack, "Monitoring", profile=DEV), **props}
    with pytest.raises(PropsError, match=message) as error:
        SnapshotCleanup(stack, "Cleanup", profile=DEV, **values)
    assert str(error.value).startswith("Bad/Cleanup: ")


def test_the_longest_timeout_is_870_seconds():
    """Lambda's 15 minutes, less the 30 s the smoke test gets on top (the shortest, 300 s, is
    the templates' "all" stack)."""
    stack = cdk.Stack(make_app(), "Longest")
    cleanup = SnapshotCleanup(
        stack,
        "Cleanup",
        profile=DEV,
        reports_topic=sns.Topic(stack, "Reports"),
        timeout=cdk.Duration.seconds(870),
    )
    assert cleanup.cleaner.timeout.to_seconds() == 870


def test_the_minimum_timeout_keeps_the_handlers_whole_margin_free():
    """The handler keeps min(margin, half the time left) free: from the minimum timeout on,
    the whole margin (its last delete and its report at their worst)."""
    spec = importlib.util.spec_from_file_location(
        "snapshot_cleanup_app", FUNCTIONS_DIR / "snapshot_cleanup" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = handler
    spec.loader.exec_module(handler)
    margin = handler.DEADLINE_MARGIN_SECONDS
    assert snapshot_cleanup.MIN_TIMEOUT.to_seconds() * handler.DEADLINE_MARGIN_FRACTION >= margin
    assert handler.SERVICE == snapshot_cleanup.SERVICE_NAME
