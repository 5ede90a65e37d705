"""Every environment's stack: composition, tags, budget, cfn-lint, cdk-nag and golden
templates (written by another process, so they pin deterministic synthesis too; asset
hashes are pinned by the bundling tests). Each environment is synthesized once for the
whole module."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from opskit import OpsFunction, Packaging
from scripts.compact_templates import PREPARE_LIMIT_BYTES, compacted
from stacks.app import build
from tests.scanners import Scan, cfn_lint, checkov, checkov_results, synthesize_with_rule_packs
from tests.synth import (
    CDK_CONTEXT,
    ENVIRONMENTS,
    GOLDEN,
    as_list,
    golden_text,
    make_app,
    only,
)

REQUIRED_TAGS = {"Project", "Environment", "ManagedBy", "CostCenter"}


@dataclass
class Synthesized:
    name: str
    stack: cdk.Stack | None
    template: Template
    template_file: Path
    validation_report: dict[str, Any]
    acknowledgements: list[tuple[cdk.Stack | Any, dict[str, str]]]


@pytest.fixture(scope="module")
def environments() -> dict[str, Synthesized]:
    synthesized = {}
    for name in ENVIRONMENTS:
        app = make_app(environment=name, validate=True)
        stack = build(app)
        report = synthesize_with_rule_packs(app, stack)
        key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        acknowledgements = [
            (construct, entry.data)
            for construct in app.node.find_all()
            for entry in construct.node.metadata
            if entry.type == key
        ]
        synthesized[name] = Synthesized(
            name=name,
            stack=stack,
            template=Template.from_stack(stack),
            template_file=Path(app.outdir) / stack.template_file,
            validation_report=report,
            acknowledgements=acknowledgements,
        )
    return synthesized


def test_every_environment_synthesizes_one_stack_named_after_it(environments):
    assert sorted(environments) == ["dev", "prod", "staging"]
    for name, env in environments.items():
        assert env.template_file.name == f"OpsKit-{name}.template.json"


def test_every_taggable_resource_carries_the_four_tags(environments):
    for name, env in environments.items():
        tagged = 0
        for logical_id, resource in env.template.to_json()["Resources"].items():
            tags = resource.get("Properties", {}).get("Tags")
            if isinstance(tags, list):
                values = {t["Key"]: t["Value"] for t in tags}
                assert set(values) >= REQUIRED_TAGS, f"{name}/{logical_id} lacks tags"
                assert values["Environment"] == name
                assert values["CostCenter"] == CDK_CONTEXT["environments"][name]["costCenter"]
                tagged += 1
        assert tagged >= 10


def test_each_environment_has_a_monthly_budget_alerting_the_warning_topic(environments):
    for name, env in environments.items():
        budget = only(env.template.find_resources("AWS::Budgets::Budget"))["Properties"]
        data = budget["Budget"]
        assert data["BudgetLimit"] == {
            "Amount": CDK_CONTEXT["environments"][name]["monthlyBudgetUsd"],
            "Unit": "USD",
        }
        assert (data["BudgetType"], data["TimeUnit"]) == ("COST", "MONTHLY")
        assert data["FilterExpression"]["And"][:2] == [
            {"Tags": {"Key": "Environment", "Values": [name], "MatchOptions": ["EQUALS"]}},
            {"Tags": {"Key": "Project", "Values": ["cdk-opskit"], "MatchOptions": ["EQUALS"]}},
        ]
        assert data["Metrics"] == ["UnblendedCost"]
        kinds = [
            n["Notification"]["NotificationType"] for n in budget["NotificationsWithSubscribers"]
        ]
        assert kinds == ["ACTUAL", "ACTUAL", "FORECASTED"]
        subscriber = budget["NotificationsWithSubscribers"][0]["Subscribers"][0]
        assert subscriber["SubscriptionType"] == "SNS"
        topic = env.template.to_json()["Resources"][subscriber["Address"]["Ref"]]
        assert "warning" in topic["Properties"]["DisplayName"]


def test_alert_topics_are_encrypted_with_a_rotating_key_their_publishers_can_use(environments):
    template = environments["prod"].template
    key = only(
        template.find_resources(
            "AWS::KMS::Key", {"Properties": {"Description": Match.string_like_regexp("alert")}}
        )
    )["Properties"]
    assert key["EnableKeyRotation"] is True
    conditions = {
        service: statement.get("Condition")
        for statement in key["KeyPolicy"]["Statement"]
        if "Service" in statement["Principal"]
        for service in as_list(statement["Principal"]["Service"])
    }
    assert conditions["cloudwatch.amazonaws.com"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    # Nothing says Budgets' KMS requests carry aws:SourceAccount; its topic policy does.
    assert conditions["budgets.amazonaws.com"] is None
    # EventBridge's guide: no conditions for it on encrypted topics (the key guard).
    assert conditions["events.amazonaws.com"] is None
    topics = template.find_resources("AWS::SNS::Topic")
    assert sorted(t["Properties"]["DisplayName"] for t in topics.values()) == [
        "opskit prod critical alerts",
        "opskit prod reports",
        "opskit prod user created",
        "opskit prod warning alerts",
    ]
    for topic in topics.values():
        assert "KmsMasterKeyId" in topic["Properties"]


def test_cloudwatch_alarms_of_this_account_may_publish_to_the_alert_topics(environments):
    template = environments["prod"].template
    policies = template.find_resources("AWS::SNS::TopicPolicy")
    alert_topics = template.find_resources(
        "AWS::SNS::Topic", {"Properties": {"DisplayName": Match.string_like_regexp("alerts$")}}
    )
    assert len(alert_topics) == 2
    for topic_id in alert_topics:
        statements = [
            statement
            for policy in policies.values()
            if {"Ref": topic_id} in policy["Properties"]["Topics"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        [publish] = [
            s
            for s in statements
            if s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        ]
        assert publish["Action"] == "sns:Publish"
        assert publish["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        assert ":alarm:*" in json.dumps(publish["Condition"]["ArnLike"]["aws:SourceArn"])


def test_alert_and_report_emails_from_config_subscribe_with_a_dead_letter_queue(environments):
    template = environments["prod"].template
    topics = {
        logical_id: topic["Properties"]["DisplayName"]
        for logical_id, topic in template.find_resources("AWS::SNS::Topic").items()
    }
    emails = template.find_resources(
        "AWS::SNS::Subscription", {"Properties": {"Protocol": "email"}}
    ).values()
    subscribed = sorted(
        (topics[s["Properties"]["TopicArn"]["Ref"]], s["Properties"]["Endpoint"]) for s in emails
    )
    assert subscribed == [
        ("opskit prod critical alerts", "platform-alerts@example.com"),
        ("opskit prod reports", "platform-reports@example.com"),
        ("opskit prod warning alerts", "platform-alerts@example.com"),
    ]
    for subscription in template.find_resources("AWS::SNS::Subscription").values():
        assert "RedrivePolicy" in subscription["Properties"]


def test_the_dashboard_has_a_row_per_function(environments):
    dashboard = only(environments["prod"].template.find_resources("AWS::CloudWatch::Dashboard"))
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in ("Invocations", "Errors", "Duration", "Throttles", "DLQ depth", "p50", "p99"):
        assert title in body
    assert "DeploymentNotifier/Notifier" in body
    assert '"label":"async"' in body.replace("\\", "").replace(" ", "")
    assert '"label":"rule"' in body.replace("\\", "").replace(" ", ""), "queues added later join"
    assert "Undelivered alerts" in body
    assert dashboard["Properties"]["DashboardName"] == {
        "Fn::Join": ["", ["opskit-prod-", {"Ref": "AWS::Region"}]]
    }, "unique in the account: dashboards have no region, the environment may have two"


def test_snapshot_cleanup_runs_weekly_where_the_profile_enables_schedules(environments):
    for name, expected in (("dev", "DISABLED"), ("staging", "ENABLED"), ("prod", "ENABLED")):
        template = environments[name].template
        [schedule] = [
            s["Properties"]
            for s in template.find_resources("AWS::Scheduler::Schedule").values()
            if "snapshot cleanup" in s["Properties"].get("Description", "")
        ]
        assert (schedule["ScheduleExpression"], schedule["State"]) == (
            "cron(0 3 ? * SUN *)",
            expected,
        )
        [cleanup] = template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"SCOPE": "owned"}}}},
        ).values()
        role = cleanup["Properties"]["Role"]["Fn::GetAtt"][0]
        [delete] = [
            statement
            for policy in template.find_resources("AWS::IAM::Policy").values()
            if {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Action"] == "ec2:DeleteSnapshot"
        ]
        assert delete["Condition"]["StringEquals"] == {
            "ec2:ResourceTag/AutomatedBackup": "true",
            "ec2:ResourceTag/CreatedBy": "opskit-backup",
            "ec2:ResourceTag/Environment": name,
        }


def test_alarm_actions_are_enabled_only_where_the_profile_says(environments):
    for name, expected in (("dev", False), ("staging", True), ("prod", True)):
        alarms = environments[name].template.find_resources("AWS::CloudWatch::Alarm").values()
        severity_alarms = [
            a["Properties"]
            for a in alarms
            if a["Properties"]["AlarmDescription"].startswith(("[WARNING]", "[CRITICAL]"))
        ]
        assert {a["ActionsEnabled"] for a in severity_alarms} == {expected}
        rollback = [a for a in alarms if "[DEPLOYMENT]" in a["Properties"]["AlarmDescription"]]
        groups = environments[name].template.find_resources("AWS::CodeDeploy::DeploymentGroup")
        assert len(rollback) == len(groups) >= 1
        assert all("AlarmActions" not in alarm["Properties"] for alarm in rollback)


def test_the_user_api_of_staging_and_prod_has_a_firewall_of_its_own_and_dev_none(environments):
    for name, expected in (("dev", 0), ("staging", 1), ("prod", 1)):
        template = environments[name].template
        assert len(template.find_resources("AWS::WAFv2::WebACL")) == expected
        assert len(template.find_resources("AWS::WAFv2::WebACLAssociation")) == expected


def test_the_log_processor_watches_every_other_function_of_the_stack(environments):
    for env in environments.values():
        template = env.template
        filters = template.find_resources("AWS::Logs::SubscriptionFilter").values()
        watched = {f["Properties"]["LogGroupName"]["Ref"] for f in filters}
        function_logs = {
            f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            for f in template.find_resources("AWS::Lambda::Function").values()
        }
        own = {group for group in function_logs if group.startswith("LogProcessor")}
        assert len(own) == 2, "the processor and its smoke test"
        assert watched == function_logs - own


@pytest.fixture(scope="module")
def configured_dev() -> cdk.Stack:
    """dev with the optional settings changed, and without the user service, which these
    settings do not touch: one short synthesis serves every such test."""
    dev = {k: v for k, v in CDK_CONTEXT["environments"]["dev"].items() if k != "userService"}
    environments = {
        **CDK_CONTEXT["environments"],
        "dev": {
            **dev,
            "region": "eu-west-1",
            "logProcessor": {
                "logGroups": ["/aws/lambda/legacy-orders"],
                "watchStackFunctions": False,
            },
            "packaging": {"log_processor": "image"},
        },
    }
    return build(make_app(environment="dev", environments=environments))


def test_a_region_alone_makes_a_stack_of_that_region_in_the_deploying_account(configured_dev):
    assert configured_dev.region == "eu-west-1"
    assert cdk.Token.is_unresolved(configured_dev.account)


def test_only_stacks_that_retain_their_data_are_protected_from_deletion(environments):
    protected = {
        name: synthesized.stack.termination_protection for name, synthesized in environments.items()
    }
    assert protected == {"dev": False, "staging": False, "prod": True}


def test_log_groups_from_config_are_watched_and_stack_functions_can_be_left_out(configured_dev):
    filters = Template.from_stack(configured_dev).find_resources("AWS::Logs::SubscriptionFilter")
    assert [f["Properties"]["LogGroupName"] for f in filters.values()] == [
        "/aws/lambda/legacy-orders"
    ]


def test_packaging_from_config_makes_that_function_an_image_and_leaves_the_others_zips(
    configured_dev,
):
    functions = [c for c in configured_dev.node.find_all() if isinstance(c, OpsFunction)]
    packaged = {function.name: function.packaging for function in functions}
    assert packaged.pop("log_processor") is Packaging.CONTAINER_IMAGE
    assert set(packaged.values()) == {Packaging.ZIP}


def test_the_environment_scheduler_scales_dev_and_staging_and_only_reports_on_prod(
    environments,
):
    for name, scales in (("dev", True), ("staging", True), ("prod", False)):
        template = environments[name].template
        inputs = [
            json.loads(schedule["Properties"]["Target"].get("Input", "{}"))
            for schedule in template.find_resources("AWS::Scheduler::Schedule").values()
        ]
        actions = sorted(i["action"] for i in inputs if "action" in i)
        assert actions == (["report", "scale_down", "scale_up"] if scales else ["report"])
        [function] = template.find_resources(
            "AWS::Lambda::Function",
            {
                "Properties": {
                    "Environment": {"Variables": {"ALLOWED_ENVIRONMENTS": Match.any_value()}}
                }
            },
        ).values()
        allowed = function["Properties"]["Environment"]["Variables"]["ALLOWED_ENVIRONMENTS"]
        assert allowed == (name if scales else "")


def test_the_user_service_is_composed_from_each_environments_config(environments):
    for name, env in environments.items():
        template = env.template
        config = CDK_CONTEXT["environments"][name]["userService"]
        stage = only(template.find_resources("AWS::ApiGateway::Stage"))["Properties"]
        assert stage["StageName"] == name
        throttling = config.get("throttling", {})
        [settings] = stage["MethodSettings"]
        assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (
            throttling.get("rateLimit", 100),
            throttling.get("burstLimit", 200),
        )

        def variables(handler: str, template: Template = template) -> dict[str, Any]:
            found = template.find_resources(
                "AWS::Lambda::Function", {"Properties": {"Handler": handler}}
            )
            return dict(only(found)["Properties"]["Environment"]["Variables"])

        assert variables("email_sender.lambda_handler")["FROM_EMAIL"] == config["sesSender"]
        assert variables("api.lambda_handler")["ALLOWED_ORIGINS"] == ",".join(
            config["allowedOrigins"]
        )
        [metrics] = [
            s["Properties"]["State"]
            for s in template.find_resources("AWS::Scheduler::Schedule").values()
            if "user metrics" in s["Properties"]["Description"]
        ]
        assert metrics == ("ENABLED" if name == "prod" else "DISABLED")


def test_prod_users_get_cognito_e_mail_through_ses_from_the_services_sender(environments):
    """Cognito's own sender allows a few dozen e-mails a day: too few for production."""
    prod_pool = only(environments["prod"].template.find_resources("AWS::Cognito::UserPool"))
    email = prod_pool["Properties"]["EmailConfiguration"]
    sender = CDK_CONTEXT["environments"]["prod"]["userService"]["sesSender"]
    assert email["EmailSendingAccount"] == "DEVELOPER"
    assert email["From"] == sender
    assert ":ses:eu-west-1:" in json.dumps(email["SourceArn"])
    assert json.dumps(email["SourceArn"]).endswith(f'identity/{sender}"]]}}')
    dev_pool = only(environments["dev"].template.find_resources("AWS::Cognito::UserPool"))
    assert "EmailConfiguration" not in dev_pool["Properties"], "dev keeps Cognito's sender"


@pytest.fixture(scope="module")
def careless() -> Synthesized:
    """A stack with a plain queue, which every rule pack and scanner flags: the checks can fail."""
    app = make_app()
    stack = cdk.Stack(app, "Careless")
    sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
    report = synthesize_with_rule_packs(app, stack)
    template_file = Path(app.outdir) / stack.template_file
    return Synthesized(
        name="careless",
        stack=None,
        template=Template.from_json(json.loads(template_file.read_text())),
        template_file=template_file,
        validation_report=report,
        acknowledgements=[],
    )


SCANNED = ("prod",)
"""The profile with the most resources (customer-managed keys, retention, PITR, termination
protection); `make scan` (`make lint`, and CI) scans every environment."""


@pytest.fixture(scope="module")
def scans(environments, careless, scan_cache) -> dict[str, Scan]:
    """cfn-lint with AWS's serverless rules and checkov, over the careless stack too, side
    by side."""
    files = [careless.template_file, *(environments[name].template_file for name in SCANNED)]
    return {"cfn-lint": cfn_lint(files, scan_cache), "checkov": checkov(files, scan_cache)}


def test_cfn_lint_and_its_serverless_rules_report_nothing(scans, careless):
    _, stdout, stderr = scans["cfn-lint"].result()
    findings = [line for line in stdout.splitlines() if line.strip()]
    scanned = careless.template_file.name
    assert [f for f in findings if Path(f.split(":", 1)[0]).name != scanned] == [], stderr
    assert any(":ES6000:" in f for f in findings), "the serverless rules are loaded and can fail"


def test_checkov_reports_no_unskipped_finding_and_every_skip_has_its_reason(scans, careless):
    results = checkov_results(scans["checkov"])
    failed = {
        (Path(c["file_path"]).name, c["check_id"], c["resource"]) for c in results["failed_checks"]
    }
    assert {f for f in failed if f[0] != careless.template_file.name} == set()
    assert (careless.template_file.name, "CKV_AWS_27") in {f[:2] for f in failed}, (
        "checkov runs, and can fail"
    )
    assert results["skipped_checks"], "the template's own skips are read"
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"]["suppress_comment"]) > 20, skipped["resource"]


def test_cdk_nag_reports_no_unacknowledged_finding(environments):
    for name, env in environments.items():
        plugins = [plugin["pluginName"] for plugin in env.validation_report["pluginReports"]]
        assert "CloudFormation Validate" in plugins, f"{name}: CDK's own validation ran too"
        failures = [
            f"{name}: {violation['ruleName']} at {c['constructPath']}"
            for plugin in env.validation_report["pluginReports"]
            for violation in plugin.get("violations", [])
            for c in violation["violatingConstructs"]
        ]
        assert failures == []


def test_every_acknowledgement_has_a_reason_and_targets_a_specific_resource(environments):
    for env in environments.values():
        assert env.acknowledgements, "the stacks acknowledge at least the DLQ findings"
        for construct, data in env.acknowledgements:
            assert not isinstance(construct, cdk.Stack | cdk.App), construct.node.path
            for rule, reason in data.items():
                assert len(reason) > 20, f"{construct.node.path}: {rule} needs a reason"


def test_cdk_nag_does_report_an_unacknowledged_finding(careless):
    """The check above can fail: a plain queue violates both packs."""
    report = careless.validation_report
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p.get("violations", [])}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4", "Serverless-SQSRedrivePolicy"} <= rules


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_template_without_whitespace_fits_the_pipelines_prepare_action(environments, name):
    """A pipeline stage deploys this template through CodePipeline's CloudFormation action,
    which refuses more than 512 KB; `make synth PIPELINE=1` drops the whitespace."""
    size = len(compacted(environments[name].template_file.read_bytes()))
    assert size <= PREPARE_LIMIT_BYTES, f"{name}: {size} bytes without whitespace"


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_template_matches_its_committed_golden_copy(environments, name):
    """Refresh after an intended change with `make golden`; review the diff in the pull request."""
    actual = golden_text(environments[name].template_file.read_text())
    golden = GOLDEN / f"{name}.template.json"
    if os.environ.get("OPSKIT_UPDATE_GOLDEN") == "1":
        golden.write_text(actual)
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(golden), "synthesized", n=2
            )
        )
        pytest.fail(
            f"{name} template differs from {golden} (run `make golden` if intended):\n{diff[:6000]}"
        )
