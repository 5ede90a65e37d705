"""DeploymentNotifier: which CodePipeline events reach the notifier, and what it may touch."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Match, Template

from opskit import DEV, PROD, DeploymentNotifier, PropsError, WebhookFormat
from tests.synth import make_app, only


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    app = make_app()
    all_pipelines = cdk.Stack(app, "AllPipelines")
    DeploymentNotifier(all_pipelines, "Notifier", profile=DEV, webhook_secret_name="ops/webhook")
    chosen = cdk.Stack(app, "Chosen")
    notifier = DeploymentNotifier(
        chosen,
        "Notifier",
        profile=PROD,
        webhook_secret=secretsmanager.Secret(chosen, "Webhook"),
        webhook_format=WebhookFormat.TEAMS,
        pipelines=["api", "web"],
        include_stage_events=True,
        include_action_events=True,
    )
    quiet = cloudwatch.Alarm(
        chosen,
        "Undelivered",
        metric=cloudwatch.Metric(namespace="AWS/SQS", metric_name="Depth"),
        threshold=1,
        evaluation_periods=1,
    )
    notifier.forward_alarms(quiet)
    return {"all": Template.from_stack(all_pipelines), "chosen": Template.from_stack(chosen)}


def notifier_function(template: Template) -> dict:
    return only(
        template.find_resources(
            "AWS::Lambda::Function",
            {"Properties": {"Environment": {"Variables": {"WEBHOOK_FORMAT": Match.any_value()}}}},
        )
    )["Properties"]


def test_pipeline_execution_changes_of_every_pipeline_by_default(templates):
    rule = only(templates["all"].find_resources("AWS::Events::Rule"))["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.codepipeline"],
        "detail-type": ["CodePipeline Pipeline Execution State Change"],
    }


def pipeline_rule(template: Template) -> dict:
    return only(
        template.find_resources(
            "AWS::Events::Rule",
            {"Properties": {"EventPattern": {"source": ["aws.codepipeline"]}}},
        )
    )["Properties"]


def test_forwarded_alarms_reach_chat_on_alarm_and_recovery_through_the_same_alias(templates):
    """A second path for alarms whose own channel (e-mail) may be what fails; a first
    evaluation (INSUFFICIENT_DATA to OK) is not news."""
    template = templates["chosen"]
    rule = only(
        template.find_resources(
            "AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.cloudwatch"]}}}
        )
    )["Properties"]
    [alarm_id] = template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "Depth"}}
    )
    assert rule["EventPattern"] == {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "resources": [{"Fn::GetAtt": [alarm_id, "Arn"]}],
        "detail": {
            "$or": [
                {"state": {"value": ["ALARM"]}},
                {"state": {"value": ["OK"]}, "previousState": {"value": ["ALARM"]}},
            ]
        },
    }
    [target] = rule["Targets"]
    assert target == {**pipeline_rule(template)["Targets"][0], "Id": target["Id"]}


def test_listed_pipelines_and_optional_stage_and_action_changes(templates):
    rule = pipeline_rule(templates["chosen"])
    assert rule["EventPattern"] == {
        "source": ["aws.codepipeline"],
        "detail-type": [
            "CodePipeline Pipeline Execution State Change",
            "CodePipeline Stage Execution State Change",
            "CodePipeline Action Execution State Change",
        ],
        "detail": {"pipeline": ["api", "web"]},
    }


def test_the_rule_invokes_the_alias_with_retries_and_its_own_dead_letter_queue(templates):
    template = templates["all"]
    [target] = only(template.find_resources("AWS::Events::Rule"))["Properties"]["Targets"]
    assert "Alias" in target["Arn"]["Ref"]
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 7200, "MaximumRetryAttempts": 4}
    rule_dlq = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert rule_dlq.startswith("NotifierRuleDeadLetterQueue")
    [config] = [
        c["Properties"]
        for c in template.find_resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["Qualifier"] != "$LATEST"  # the smoke-test hook's
    ]
    function_dlq = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert function_dlq != rule_dlq, "raw events and Lambda failure records stay apart"
    depth_alarms = [
        a
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        if "rule dead-letter queue" in a["Properties"]["AlarmDescription"]
    ]
    assert len(depth_alarms) == 1
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Principal": "events.amazonaws.com", "Action": "lambda:InvokeFunction"},
    )


def test_the_handler_contract_environment(templates):
    variables = notifier_function(templates["chosen"])["Environment"]["Variables"]
    assert variables["WEBHOOK_FORMAT"] == "teams"
    assert variables["WEBHOOK_SECRET_ARN"] == {
        "Ref": next(iter(templates["chosen"].find_resources("AWS::SecretsManager::Secret")))
    }
    assert (
        notifier_function(templates["all"])["Environment"]["Variables"]["WEBHOOK_FORMAT"] == "slack"
    )
    assert notifier_function(templates["all"])["Handler"] == "app.lambda_handler"


def test_the_notifier_reads_only_its_webhook_secret(templates):
    statements = [
        s
        for p in templates["all"].find_resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "secretsmanager:GetSecretValue" in s["Action"]
    ]
    [statement] = statements
    resource = "".join(str(part) for part in statement["Resource"]["Fn::Join"][1])
    assert resource.endswith(":secret:ops/webhook-??????")


def test_the_notifier_uses_the_shared_layers_once_per_stack(templates):
    template = templates["chosen"]
    template.resource_count_is("AWS::Lambda::LayerVersion", 2)
    assert len(notifier_function(template)["Layers"]) == 2


def test_each_deployment_is_smoke_tested_without_posting(templates):
    hooks = templates["all"].find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {"TARGET_QUALIFIER": "DEV"}}}},
    )
    variables = only(hooks)["Properties"]["Environment"]["Variables"]
    assert variables["TEST_EVENT"] == '{"opskit": {"smokeTest": true}}'


@pytest.mark.parametrize("secrets", [{}, {"webhook_secret_name": "a", "webhook_secret": "b"}])
def test_exactly_one_webhook_secret_is_required(secrets):
    stack = cdk.Stack(make_app(), "Bad")
    if "webhook_secret" in secrets:
        secrets["webhook_secret"] = secretsmanager.Secret(stack, "S")
    with pytest.raises(PropsError, match="exactly one of webhook_secret or webhook_secret_name"):
        DeploymentNotifier(stack, "Notifier", profile=DEV, **secrets)
