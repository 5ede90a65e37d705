"""BackupAutomation: what the backup function may touch, when it runs, and who hears of failures."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from opskit_common.tags import BACKUP_OWNERSHIP_TAGS
from opskit_common.tags import PERMANENT_TAG as HANDLER_PERMANENT_TAG

from opskit import DEV, PROD, BackupAutomation, BackupType, Monitoring, PropsError, Severity
from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.backup import MIN_TIMEOUT, OWNERSHIP_TAGS, PERMANENT_TAG
from tests.scanners import synthesize_with_rule_packs
from tests.synth import dashboard_text, full_width_row, make_app, only

OWNED_REQUEST = {
    "aws:RequestTag/AutomatedBackup": "true",
    "aws:RequestTag/CreatedBy": "opskit-backup",
    "aws:RequestTag/Environment": "prod",
}


@dataclass
class Synthesized:
    templates: dict[str, Template]
    validation_report: dict[str, Any]


@pytest.fixture(scope="module")
def synthesized() -> Synthesized:
    """Synthesized once, under cdk-nag's AwsSolutions and Serverless packs: prod defaults
    with Monitoring; dev with its own topic and every option; dev defaults; two
    environments sharing one account (one stack)."""
    app = make_app()
    prod = cdk.Stack(app, "Prod")
    monitoring = Monitoring(prod, "Monitoring", profile=PROD, alert_emails=["ops@example.com"])
    BackupAutomation(prod, "Backup", profile=PROD, monitoring=monitoring)

    dev = cdk.Stack(app, "Dev")
    topic = sns.Topic(
        dev, "Reports", master_key=kms.Key(dev, "Key", enable_key_rotation=True), enforce_ssl=True
    )
    BackupAutomation(
        dev,
        "Backup",
        profile=DEV,
        reports_topic=topic,
        environment_name="qa",
        retention_days=1,
        backup_type=BackupType.EC2,
        schedule=scheduler.ScheduleExpression.expression(
            "cron(30 23 ? * MON-FRI *)", cdk.TimeZone.EUROPE_LONDON
        ),
        schedule_enabled=True,
        failed_resources_thresholds={Severity.WARNING: 0, Severity.CRITICAL: 10},
    )

    dev_defaults = cdk.Stack(app, "DevDefaults")
    BackupAutomation(
        dev_defaults, "Backup", profile=DEV, monitoring=Monitoring(dev_defaults, "M", profile=DEV)
    )

    shared = cdk.Stack(app, "SharedAccount")
    shared_monitoring = Monitoring(shared, "Monitoring", profile=PROD)
    for name in ("blue", "green"):
        BackupAutomation(
            shared, name, profile=PROD, monitoring=shared_monitoring, environment_name=name
        )
    report = synthesize_with_rule_packs(app, prod)
    written = Path(app.outdir)
    return Synthesized(
        {
            stack.stack_name: Template.from_json(
                json.loads((written / stack.template_file).read_text())
            )
            for stack in (prod, dev, dev_defaults, shared)
        },
        report,
    )


@pytest.fixture(scope="module")
def templates(synthesized: Synthesized) -> dict[str, Template]:
    return synthesized.templates


@pytest.fixture(scope="module")
def prod(templates: dict[str, Template]) -> Template:
    return templates["Prod"]


@pytest.fixture(scope="module")
def dev(templates: dict[str, Template]) -> Template:
    return templates["Dev"]


def backup_function(template: Template) -> dict[str, Any]:
    return only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"POWERTOOLS_SERVICE_NAME": "backup"}}}},
        )
    )["Properties"]


def statements_by_sid(template: Template) -> dict[str, dict[str, Any]]:
    """The function role's statements that have a Sid (the backup permissions)."""
    found = {}
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "Sid" in statement:
                found[statement["Sid"]] = statement
    return found


def arn(value: Any) -> str:
    """A resource as text, with CloudFormation references written as ${Ref}."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(arn(part) for part in value["Fn::Join"][1])
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    raise AssertionError(f"unexpected resource {value}")


def resources(statement: dict[str, Any]) -> list[str]:
    found = statement["Resource"]
    return sorted(arn(r) for r in (found if isinstance(found, list) else [found]))


def actions(statement: dict[str, Any]) -> list[str]:
    found = statement["Action"]
    return sorted(found if isinstance(found, list) else [found])


EC2_SNAPSHOTS = "arn:${AWS::Partition}:ec2:${AWS::Region}::snapshot/*"
RDS = "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}"


def test_snapshots_are_created_only_with_the_ownership_tags_in_the_request(prod):
    statements = statements_by_sid(prod)
    ebs = statements["CreateOwnedEbsSnapshots"]
    assert (actions(ebs), resources(ebs)) == (["ec2:CreateSnapshot"], [EC2_SNAPSHOTS])
    assert ebs["Condition"] == {"StringEquals": OWNED_REQUEST}
    rds = statements["CreateOwnedRdsSnapshots"]
    assert actions(rds) == [
        "rds:AddTagsToResource",
        "rds:CreateDBClusterSnapshot",
        "rds:CreateDBSnapshot",
    ]
    assert resources(rds) == [
        f"{RDS}:cluster-snapshot:*-opskit-*",
        f"{RDS}:snapshot:*-opskit-*",
    ]
    assert rds["Condition"] == {"StringEquals": OWNED_REQUEST}


def test_the_sources_are_volumes_and_databases_tagged_for_backup(prod):
    statements = statements_by_sid(prod)
    volumes = statements["SnapshotVolumes"]
    assert (actions(volumes), resources(volumes)) == (
        ["ec2:CreateSnapshot"],
        ["arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:volume/*"],
    )
    assert "Condition" not in volumes, "volumes carry no tag to condition on"
    databases = statements["SnapshotTaggedDatabases"]
    assert (actions(databases), resources(databases)) == (["rds:CreateDBSnapshot"], [f"{RDS}:db:*"])
    assert databases["Condition"] == {
        "StringEqualsIgnoreCase": {"rds:db-tag/Backup": "true"},
        "StringEquals": {"rds:db-tag/Environment": "prod"},
    }
    clusters = statements["SnapshotTaggedClusters"]
    assert (actions(clusters), resources(clusters)) == (
        ["rds:CreateDBClusterSnapshot"],
        [f"{RDS}:cluster:*"],
    )
    assert clusters["Condition"] == {
        "StringEqualsIgnoreCase": {"rds:cluster-tag/Backup": "true"},
        "StringEquals": {"rds:cluster-tag/Environment": "prod"},
    }


def test_ebs_snapshots_may_be_tagged_only_by_the_call_that_creates_them(prod):
    tagging = statements_by_sid(prod)["TagEbsSnapshotsOnCreation"]
    assert (actions(tagging), resources(tagging)) == (["ec2:CreateTags"], [EC2_SNAPSHOTS])
    assert tagging["Condition"] == {"StringEquals": {"ec2:CreateAction": "CreateSnapshot"}}


def deletable(prefix: str, environment: str) -> dict[str, Any]:
    return {
        "StringEquals": {
            f"{prefix}/AutomatedBackup": "true",
            f"{prefix}/CreatedBy": "opskit-backup",
            f"{prefix}/Environment": environment,
        },
        "StringNotEqualsIgnoreCase": {f"{prefix}/Retention": "permanent"},
    }


def test_only_this_environments_own_snapshots_not_tagged_permanent_may_be_deleted(prod):
    statements = statements_by_sid(prod)
    ebs = statements["DeleteOwnedEbsSnapshots"]
    assert (actions(ebs), resources(ebs)) == (["ec2:DeleteSnapshot"], [EC2_SNAPSHOTS])
    assert ebs["Condition"] == deletable("ec2:ResourceTag", "prod")
    db = statements["DeleteOwnedDbSnapshots"]
    assert (actions(db), resources(db)) == (
        ["rds:DeleteDBSnapshot"],
        [f"{RDS}:snapshot:*-opskit-*"],
    )
    assert db["Condition"] == deletable("rds:snapshot-tag", "prod")
    cluster = statements["DeleteOwnedClusterSnapshots"]
    assert (actions(cluster), resources(cluster)) == (
        ["rds:DeleteDBClusterSnapshot"],
        [f"{RDS}:cluster-snapshot:*-opskit-*"],
    )
    assert cluster["Condition"] == deletable("rds:cluster-snapshot-tag", "prod")


def test_the_environment_in_every_condition_is_the_environment_name(templates):
    """Dev backs up environment_name="qa"."""
    statements = statements_by_sid(templates["Dev"])
    created = statements["CreateOwnedEbsSnapshots"]["Condition"]["StringEquals"]
    assert created["aws:RequestTag/Environment"] == "qa"
    assert statements["DeleteOwnedDbSnapshots"]["Condition"] == deletable("rds:snapshot-tag", "qa")
    assert statements["SnapshotTaggedClusters"]["Condition"]["StringEquals"] == {
        "rds:cluster-tag/Environment": "qa"
    }


def test_only_listings_without_resource_level_permissions_are_granted_on_everything(prod):
    role = backup_function(prod)["Role"]["Fn::GetAtt"][0]
    wildcard = [
        action
        for policy in prod.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] == "*"
        for action in actions(statement)
    ]
    assert sorted(wildcard) == [
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeLockedSnapshots",
        "ec2:DescribeSnapshots",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    ]
    statements = statements_by_sid(prod)
    assert resources(statements["ListDatabases"]) == [f"{RDS}:db:*"]
    assert resources(statements["ListClusters"]) == [f"{RDS}:cluster:*"]
    assert resources(statements["ListDatabaseSnapshots"]) == [f"{RDS}:db:*", f"{RDS}:snapshot:*"]
    assert resources(statements["ListClusterSnapshots"]) == [
        f"{RDS}:cluster-snapshot:*",
        f"{RDS}:cluster:*",
    ]


def test_every_destructive_or_creating_action_is_conditioned_or_name_scoped(prod):
    """No statement grants a write on a bare account-wide wildcard without a condition."""
    for sid, statement in statements_by_sid(prod).items():
        if sid.startswith("List"):
            continue
        scoped_by_name = all("-opskit-" in r for r in resources(statement))
        assert "Condition" in statement or scoped_by_name or sid == "SnapshotVolumes", sid


def test_the_ownership_tags_are_the_ones_the_handler_writes():
    assert dict(OWNERSHIP_TAGS) == dict(BACKUP_OWNERSHIP_TAGS)
    assert PERMANENT_TAG == HANDLER_PERMANENT_TAG


def test_the_handler_contract_environment(prod, dev):
    variables = backup_function(prod)["Environment"]["Variables"]
    [reports_topic] = prod.find_resources(
        "AWS::SNS::Topic", {"Properties": {"DisplayName": "opskit prod reports"}}
    )
    assert variables["ENVIRONMENT"] == "prod"
    assert variables["BACKUP_RETENTION_DAYS"] == "7"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "opskit"
    assert variables["SNS_TOPIC_ARN"] == {"Ref": reports_topic}
    assert backup_function(prod)["Handler"] == "app.lambda_handler"
    assert backup_function(prod)["Timeout"] == 300
    dev_variables = backup_function(dev)["Environment"]["Variables"]
    assert (dev_variables["ENVIRONMENT"], dev_variables["BACKUP_RETENTION_DAYS"]) == (
        "qa",
        "1",
    ), "a day, the least retention"


def test_the_function_may_publish_to_the_encrypted_reports_topic(prod):
    statements = [
        s
        for p in prod.find_resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    topic = backup_function(prod)["Environment"]["Variables"]["SNS_TOPIC_ARN"]
    assert any(s["Action"] == "sns:Publish" and s["Resource"] == topic for s in statements)
    [key_id] = prod.find_resources(
        "AWS::KMS::Key", {"Properties": {"Description": Match.string_like_regexp("alert")}}
    )
    assert any(
        "kms:GenerateDataKey*" in actions(s) and s["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
        for s in statements
    )


def test_a_nightly_schedule_invokes_the_alias_with_the_event_contract(prod):
    schedule = only(prod.find_resources("AWS::Scheduler::Schedule"))["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Etc/UTC"
    assert schedule["State"] == "ENABLED"
    assert json.loads(schedule["Target"]["Input"]) == {
        "backup_type": "all",
        "environment": "prod",
        "dry_run": False,
    }
    assert "Alias" in schedule["Target"]["Arn"]["Ref"]


def test_schedule_time_zone_type_and_state_are_configurable(dev):
    schedule = only(dev.find_resources("AWS::Scheduler::Schedule"))["Properties"]
    assert schedule["ScheduleExpression"] == "cron(30 23 ? * MON-FRI *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/London"
    assert schedule["State"] == "ENABLED", "explicitly on, although the dev profile is off"
    assert json.loads(schedule["Target"]["Input"])["backup_type"] == "ec2"


def test_the_schedule_follows_the_profile_by_default(templates):
    schedule = only(templates["DevDefaults"].find_resources("AWS::Scheduler::Schedule"))
    assert schedule["Properties"]["State"] == "DISABLED"


def failed_resources_alarms(template: Template) -> list[dict[str, Any]]:
    return [
        alarm["Properties"]
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "FailedResources"
    ]


def test_failed_resources_warn_the_alert_topic(prod):
    [alarm] = failed_resources_alarms(prod)
    assert alarm["Namespace"] == "opskit" and alarm["Statistic"] == "Sum"
    assert sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"]) == [
        ("environment", "prod"),
        ("service", "backup"),
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching" and alarm["ActionsEnabled"] is True
    warning_topic = next(
        lid
        for lid, t in prod.find_resources("AWS::SNS::Topic").items()
        if t["Properties"]["DisplayName"] == "opskit prod warning alerts"
    )
    assert alarm["AlarmActions"] == [{"Ref": warning_topic}]
    assert alarm["AlarmDescription"].startswith("[WARNING] Prod/Backup:")


def test_failed_resources_tiers_are_configurable(dev):
    alarms = failed_resources_alarms(dev)
    assert sorted(a["Threshold"] for a in alarms) == [0, 10]
    assert {a["ActionsEnabled"] for a in alarms} == {False}, "the dev profile keeps actions off"


def test_two_environments_in_one_account_never_share_an_alarm_metric(templates):
    alarms = failed_resources_alarms(templates["SharedAccount"])
    environments = sorted(
        next(d["Value"] for d in a["Dimensions"] if d["Name"] == "environment") for a in alarms
    )
    assert environments == ["blue", "green"]


def test_the_dashboard_draws_the_backups(prod):
    body = json.dumps(only(prod.find_resources("AWS::CloudWatch::Dashboard"))["Properties"])
    for text in ("Backups of prod", "FailedResources", "SnapshotsCreated", "SnapshotsDeleted"):
        assert text in body
    assert "Prod/Backup/Function" in body
    assert full_width_row("Backups of prod").search(dashboard_text(prod)), (
        "a full-width row, six units high"
    )


def test_each_deployment_is_smoke_tested_with_a_dry_run(prod):
    hook = only(
        prod.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"TARGET_QUALIFIER": "PROD"}}}},
        )
    )
    assert json.loads(hook["Properties"]["Environment"]["Variables"]["TEST_EVENT"]) == {
        "opskit": {"smokeTest": True}
    }


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "give monitoring or reports_topic"),
        ({"monitoring": True, "retention_days": 0}, "retention_days must be >= 1, got 0"),
        ({"monitoring": True, "retention_days": 1.5}, "retention_days must be a whole number"),
        ({"monitoring": True, "environment_name": " "}, "environment_name must not be empty"),
        (
            {"monitoring": True, "timeout": cdk.Duration.minutes(4)},
            "timeout must be at least 300 seconds, got 240",
        ),
    ],
)
def test_bad_props_are_named_in_one_line(props, message):
    stack = cdk.Stack(make_app(), "Bad")
    if props.pop("monitoring", False):
        props["monitoring"] = Monitoring(stack, "Monitoring", profile=DEV)
    with pytest.raises(PropsError, match=f"^Bad/Backup: {message}"):
        BackupAutomation(stack, "Backup", profile=DEV, **props)


def test_the_minimum_timeout_keeps_the_handlers_whole_margin_free():
    """The handler keeps min(margin, half the time left) free: at least the minimum timeout,
    and the whole margin (the worst case of its last call and its report) is kept."""
    spec = importlib.util.spec_from_file_location("backup_app", FUNCTIONS_DIR / "backup" / "app.py")
    assert spec is not None and spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = handler
    spec.loader.exec_module(handler)
    margin = handler.DEADLINE_MARGIN_SECONDS
    assert MIN_TIMEOUT.to_seconds() * handler.DEADLINE_MARGIN_FRACTION >= margin
    assert handler.METRIC_DIMENSION == "environment"


def test_cdk_nag_reports_nothing(synthesized):
    """For every stack above, each holding only the construct (and its Monitoring or topic)."""
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in synthesized.validation_report["pluginReports"]
        for violation in plugin.get("violations", [])
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []
