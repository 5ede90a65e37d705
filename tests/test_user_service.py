"""UserService: its data model, event pipeline, REST API, Cognito pool, alarms and IAM, per profile.

Synthesized once, under cdk-nag's AwsSolutions and Serverless packs, as three stacks that
hold only the service (and Monitoring): prod defaults with two allowed origins; dev with
every option; staging with an existing user pool and no CORS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk.assertions import Template

from opskit import (
    DEV,
    PROD,
    STAGING,
    ApiFirewall,
    ApiThrottling,
    Monitoring,
    PropsError,
    UserService,
)
from opskit.constructs.user_service import openapi
from opskit.constructs.user_service.api import CORS_ALLOW_HEADERS
from opskit.constructs.user_service.firewall import (
    MANAGED_RULE_GROUPS,
    RATE_RULE,
    StageFirewall,
)
from opskit.container_image import PACKAGING_CONTEXT
from opskit_local.functions import load_function
from opskit_local.user_service import users_table_definition
from tests.synth import make_app, only
from tests.test_environments import cfn_lint, synthesize_with_rule_packs
from tests.test_ops_function import role_statements

WEB_ACL = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/users/0a1b2c3d"
EXISTING_POOL = "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbCdEf123"
SMOKE_TEST = '{"opskit": {"smokeTest": true}}'


@dataclass
class Synthesized:
    templates: dict[str, Template]
    files: dict[str, Path]
    validation_report: dict[str, Any]


@pytest.fixture(scope="module")
def synthesized() -> Synthesized:
    app = make_app()
    prod = cdk.Stack(app, "Prod")
    UserService(
        prod,
        "Users",
        profile=PROD,
        monitoring=Monitoring(prod, "Monitoring", profile=PROD),
        ses_sender="no-reply@example.com",
        allowed_origins=["https://app.example.com", "https://admin.example.com"],
        firewall=ApiFirewall(requests_per_client=500, window_seconds=120),
    )

    dev = cdk.Stack(app, "Dev")
    UserService(
        dev,
        "Users",
        profile=DEV,
        monitoring=Monitoring(dev, "Monitoring", profile=DEV),
        ses_sender="hello@mail.example.org",
        ses_configuration_set="transactional",
        allowed_origins=["*"],
        throttling=ApiThrottling(rate_limit=20, burst_limit=40),
        mfa=cognito.Mfa.REQUIRED,
        feature_plan=cognito.FeaturePlan.PLUS,
        manage_account_logging_role=False,
        web_acl_arn=WEB_ACL,
        sender_concurrency=5,
        reserve_sender_concurrency=False,
        metrics_namespace="Shop/Users",
        user_count_source="scan",
    )

    # Pinned to an account and region, as a pipeline stage is: cdk-nag then names wildcard
    # resources by their literal ARNs, which the acknowledgements must match too.
    staging = cdk.Stack(
        app, "Staging", env=cdk.Environment(account="111111111111", region="eu-west-1")
    )
    UserService(
        staging,
        "Users",
        profile=STAGING,
        ses_sender="no-reply@example.com",
        user_pool=cognito.UserPool.from_user_pool_arn(staging, "Pool", EXISTING_POOL),
        execution_log_level=apigw.MethodLoggingLevel.INFO,
    )
    report = synthesize_with_rule_packs(app, prod)
    written = Path(app.outdir)
    stacks = {"prod": prod, "dev": dev, "staging": staging}
    files = {name: written / stack.template_file for name, stack in stacks.items()}
    return Synthesized(
        {name: Template.from_json(json.loads(file.read_text())) for name, file in files.items()},
        files,
        report,
    )


@pytest.fixture(scope="module")
def prod(synthesized: Synthesized) -> Template:
    return synthesized.templates["prod"]


@pytest.fixture(scope="module")
def dev(synthesized: Synthesized) -> Template:
    return synthesized.templates["dev"]


@pytest.fixture(scope="module")
def staging(synthesized: Synthesized) -> Template:
    return synthesized.templates["staging"]


def resources(template: Template, type_: str, **properties: Any) -> Mapping[str, Any]:
    return template.find_resources(type_, {"Properties": properties} if properties else None)


def function(template: Template, handler: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, found)] = resources(template, "AWS::Lambda::Function", Handler=handler).items()
    return logical_id, found["Properties"]


def statements_of(template: Template, handler: str) -> list[dict[str, Any]]:
    _, properties = function(template, handler)
    return role_statements(template, properties["Role"]["Fn::GetAtt"][0])


def by_action(statements: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for statement in statements:
        actions = statement["Action"]
        for action in actions if isinstance(actions, list) else [actions]:
            found.setdefault(action, []).append(statement)
    return found


def logical_id(template: Template, type_: str, text: str) -> str:
    [found] = [k for k in resources(template, type_) if text in k]
    return found


def table(template: Template, text: str) -> dict[str, Any]:
    return template.to_json()["Resources"][logical_id(template, "AWS::DynamoDB::Table", text)]


def index_arn(table_id: str, index: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, f"/index/{index}"]]}


# --- data ---------------------------------------------------------------------------------


def test_the_users_table_is_the_handlers_data_model(prod):
    # GIVEN the table the handler tests create from users.py's documented design
    expected = users_table_definition("any")
    # THEN the construct's table has the same keys, attributes and indexes
    properties = table(prod, "DataUsers")["Properties"]
    assert properties["KeySchema"] == expected["KeySchema"]
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(
        expected["AttributeDefinitions"], key=str
    )
    assert properties["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


@pytest.mark.parametrize(("name", "kept"), [("prod", True), ("dev", False), ("staging", False)])
def test_backups_deletion_protection_and_removal_follow_the_profile(synthesized, name, kept):
    template = synthesized.templates[name]
    for text in ("DataUsers", "DataAudit"):
        found = table(template, text)
        assert found["Properties"]["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": kept
        }
        assert found["Properties"]["DeletionProtectionEnabled"] is kept
        assert found["DeletionPolicy"] == ("Retain" if kept else "Delete")


def test_audit_records_expire_through_ttl(prod):
    properties = table(prod, "DataAudit")["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "audit_id", "KeyType": "HASH"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}


def data_key_id(template: Template) -> str:
    [key] = [k for k in resources(template, "AWS::KMS::Key") if k.startswith("OpsKitDataKey")]
    return key


def test_prod_keeps_tables_and_the_secret_under_the_stacks_own_data_key(prod):
    key = data_key_id(prod)
    for text in ("DataUsers", "DataAudit"):
        assert table(prod, text)["Properties"]["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
        }
    secret = only(resources(prod, "AWS::SecretsManager::Secret"))["Properties"]
    assert secret["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    found = prod.to_json()["Resources"][key]
    assert found["Properties"]["EnableKeyRotation"] is True
    assert found["DeletionPolicy"] == "Retain", "a deleted key would leave kept tables unreadable"


def test_dev_keeps_them_under_the_aws_managed_keys_and_makes_no_key_for_them(dev):
    assert PROD.encrypt_data and not DEV.encrypt_data
    for text in ("DataUsers", "DataAudit"):
        assert table(dev, text)["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    assert "KmsKeyId" not in only(resources(dev, "AWS::SecretsManager::Secret"))["Properties"]
    assert not [k for k in resources(dev, "AWS::KMS::Key") if k.startswith("OpsKitDataKey")]


def test_the_data_key_lets_this_accounts_callers_use_it_through_dynamodb_only(prod):
    """In the key's own policy, as the AWS managed key for DynamoDB does it: in place before
    any table switches to the key, and for every caller (the API, the audit writer, the
    metrics job, a stream reader added later); what each may read is its DynamoDB grant."""
    statements = prod.to_json()["Resources"][data_key_id(prod)]["Properties"]["KeyPolicy"][
        "Statement"
    ]
    [through_dynamodb] = [s for s in statements if "dynamodb." in json.dumps(s.get("Condition"))]
    assert through_dynamodb["Principal"] == {"AWS": "*"}
    conditions = through_dynamodb["Condition"]["StringEquals"]
    assert conditions["kms:CallerAccount"] == {"Ref": "AWS::AccountId"}
    assert "kms:Decrypt" in through_dynamodb["Action"]
    assert not [a for a in through_dynamodb["Action"] if "*" in a]
    metrics = statements_of(prod, "user_metrics.lambda_handler")
    assert not [s for s in metrics if data_key_id(prod) in json.dumps(s)], "the policy covers it"


def test_the_page_token_secret_is_generated_long_enough(prod):
    secret = only(resources(prod, "AWS::SecretsManager::Secret"))["Properties"]
    generated = secret["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    assert generated["ExcludePunctuation"] is True


# --- the API function ---------------------------------------------------------------------


def test_the_api_function_may_do_exactly_what_api_py_does(prod):
    users = logical_id(prod, "AWS::DynamoDB::Table", "DataUsers")
    actions = by_action(statements_of(prod, "api.lambda_handler"))
    item = {"Fn::GetAtt": [users, "Arn"]}
    for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
        [statement] = actions[f"dynamodb:{action}"]
        assert statement["Resource"] == item
    assert [s["Resource"] for s in actions["dynamodb:Query"]] == [index_arn(users, "email-index")]
    assert [s["Resource"] for s in actions["dynamodb:Scan"]] == [index_arn(users, "created-index")]
    assert {a for a in actions if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:Scan",
    }
    topic = logical_id(prod, "AWS::SNS::Topic", "UserCreated")
    assert [s["Resource"] for s in actions["sns:Publish"]] == [{"Ref": topic}]
    [key] = [s["Resource"] for s in actions["kms:GenerateDataKey*"]]
    assert key["Fn::GetAtt"][0].startswith("UsersEventsKey")
    [read] = [s["Resource"] for s in actions["secretsmanager:GetSecretValue"]]
    assert read == {"Ref": logical_id(prod, "AWS::SecretsManager::Secret", "PageTokenSecret")}


def test_the_api_function_gets_its_contract_environment(prod, dev):
    _, properties = function(prod, "api.lambda_handler")
    variables = properties["Environment"]["Variables"]
    users = logical_id(prod, "AWS::DynamoDB::Table", "DataUsers")
    assert variables["USERS_TABLE"] == {"Ref": users}
    assert variables["USER_CREATED_TOPIC"] == {
        "Ref": logical_id(prod, "AWS::SNS::Topic", "UserCreated")
    }
    assert variables["ALLOWED_ORIGINS"] == "https://app.example.com,https://admin.example.com"
    assert "PAGE_TOKEN_SECRET_ARN" in variables
    _, properties = function(dev, "api.lambda_handler")
    assert properties["Environment"]["Variables"]["ALLOWED_ORIGINS"] == "*"


def test_every_function_runs_from_one_asset_with_both_layers_and_is_smoke_tested(prod):
    handlers = [
        "api.lambda_handler",
        "user_created.lambda_handler",
        "email_sender.lambda_handler",
        "user_metrics.lambda_handler",
    ]
    codes = set()
    for handler in handlers:
        _, properties = function(prod, handler)
        assert len(properties["Layers"]) == 2
        codes.add(json.dumps(properties["Code"], sort_keys=True))
    assert len(codes) == 1, "one asset folder, several entry modules"
    hooks = resources(
        prod,
        "AWS::Lambda::Function",
        Environment={"Variables": {"TEST_EVENT": SMOKE_TEST}},
    )
    assert len(hooks) == len(handlers)


def test_the_api_preflight_headers_are_the_handlers():
    api = load_function("user_service", "api")
    assert ",".join(CORS_ALLOW_HEADERS) == api.CORS_ALLOW_HEADERS


# --- the event pipeline -------------------------------------------------------------------


def test_the_topic_is_kms_encrypted_and_ssl_only(prod):
    topic_id = logical_id(prod, "AWS::SNS::Topic", "UserCreated")
    topic = prod.to_json()["Resources"][topic_id]["Properties"]
    key = prod.to_json()["Resources"][topic["KmsMasterKeyId"]["Fn::GetAtt"][0]]["Properties"]
    assert key["EnableKeyRotation"] is True
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(prod, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id} in p["Properties"]["Topics"]
    ]
    [deny] = [s for s in policy if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_processor_alias_is_subscribed_with_a_filter_and_a_dead_letter_queue(prod):
    subscription = only(resources(prod, "AWS::SNS::Subscription"))["Properties"]
    assert subscription["Protocol"] == "lambda"
    assert subscription["Endpoint"]["Ref"].startswith("UsersEventsUserCreatedProcessorAlias")
    assert subscription["FilterPolicy"] == {"event_type": ["user_created"]}
    dead_letters = subscription["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert "SubscriptionDeadLetterQueue" in dead_letters
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(prod, "AWS::SQS::QueuePolicy").values()
        if {"Ref": dead_letters} in p["Properties"]["Queues"]
    ]
    [sns] = [s for s in policy if s.get("Principal") == {"Service": "sns.amazonaws.com"}]
    assert sns["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Ref": logical_id(prod, "AWS::SNS::Topic", "UserCreated")
    }


def test_the_processor_retries_twice_with_leases_shorter_than_the_retry_delay(prod):
    processor_id, properties = function(prod, "user_created.lambda_handler")
    assert properties["Timeout"] < 60
    config = [
        c["Properties"]
        for c in resources(prod, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": processor_id}
    ]
    assert [c["MaximumRetryAttempts"] for c in config] == [2]
    variables = properties["Environment"]["Variables"]
    audit = logical_id(prod, "AWS::DynamoDB::Table", "DataAudit")
    assert variables["AUDIT_TABLE"] == {"Ref": audit}
    assert variables["EMAIL_QUEUE"] == {"Ref": logical_id(prod, "AWS::SQS::Queue", "EmailQueue")}


def test_the_processor_writes_the_audit_table_and_sends_to_the_email_queue_only(prod):
    actions = by_action(statements_of(prod, "user_created.lambda_handler"))
    audit = logical_id(prod, "AWS::DynamoDB::Table", "Audit")
    assert {a for a in actions if a.startswith("dynamodb:")} == {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert [s["Resource"] for s in actions[action]] == [{"Fn::GetAtt": [audit, "Arn"]}]
    [send] = actions["sqs:SendMessage"]
    assert sorted(r["Fn::GetAtt"][0] for r in send["Resource"]) == [
        logical_id(prod, "AWS::SQS::Queue", "EmailQueue"),
        logical_id(prod, "AWS::SQS::Queue", "UserCreatedProcessorDeadLetterQueue"),
    ], "the e-mail queue, and its own async dead-letter queue (Lambda's on-failure destination)"


def test_the_email_queue_outlives_six_sender_timeouts_and_redrives_after_five_receives(prod):
    _, sender = function(prod, "email_sender.lambda_handler")
    queue_id = logical_id(prod, "AWS::SQS::Queue", "EmailQueue")
    queue = prod.to_json()["Resources"][queue_id]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * sender["Timeout"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5, "Lambda's advice for SQS sources"
    dead_letters = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert "EmailDeadLetterQueue" in dead_letters
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(prod, "AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in policy)


@pytest.mark.parametrize(("name", "concurrency", "reserved"), [("prod", 10, 10), ("dev", 5, None)])
def test_the_sender_takes_batches_of_ten_within_five_seconds_at_bounded_concurrency(
    synthesized, name, concurrency, reserved
):
    template = synthesized.templates[name]
    mapping = only(resources(template, "AWS::Lambda::EventSourceMapping"))["Properties"]
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == 5
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}
    assert ":" + name.upper() in json.dumps(mapping["FunctionName"]), "the alias"
    _, sender = function(template, "email_sender.lambda_handler")
    assert sender.get("ReservedConcurrentExecutions") == reserved


def test_the_sender_may_send_only_from_its_address(prod, dev):
    """On any identity of the account (in the SES sandbox, SES authorizes on each verified
    recipient's too), only with its own From address."""
    [send] = by_action(statements_of(prod, "email_sender.lambda_handler"))["ses:SendEmail"]
    [arn] = send["Resource"] if isinstance(send["Resource"], list) else [send["Resource"]]
    assert json.dumps(arn).endswith(':identity/*"]]}')
    assert send["Condition"] == {"StringEquals": {"ses:FromAddress": "no-reply@example.com"}}
    _, sender = function(prod, "email_sender.lambda_handler")
    assert sender["Environment"]["Variables"]["FROM_EMAIL"] == "no-reply@example.com"
    assert "CONFIGURATION_SET" not in sender["Environment"]["Variables"]

    [send] = by_action(statements_of(dev, "email_sender.lambda_handler"))["ses:SendEmail"]
    arns = sorted(json.dumps(arn) for arn in send["Resource"])
    assert [arn.rsplit(":", 1)[-1] for arn in arns] == [
        'configuration-set/transactional"]]}',
        'identity/*"]]}',
    ]
    assert send["Condition"] == {"StringEquals": {"ses:FromAddress": "hello@mail.example.org"}}
    _, sender = function(dev, "email_sender.lambda_handler")
    assert sender["Environment"]["Variables"]["CONFIGURATION_SET"] == "transactional"


# --- the metrics job ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "state"), [("prod", "ENABLED"), ("dev", "DISABLED")])
def test_the_metrics_job_runs_hourly_where_the_profile_publishes_business_metrics(
    synthesized, name, state
):
    schedule = only(resources(synthesized.templates[name], "AWS::Scheduler::Schedule"))
    assert schedule["Properties"]["ScheduleExpression"] == "cron(5 * * * ? *)"
    assert schedule["Properties"]["State"] == state


def test_the_metrics_job_reads_counts_and_publishes_to_its_namespace_only(prod, dev):
    users = logical_id(prod, "AWS::DynamoDB::Table", "DataUsers")
    actions = by_action(statements_of(prod, "user_metrics.lambda_handler"))
    assert [s["Resource"] for s in actions["dynamodb:DescribeTable"]] == [
        {"Fn::GetAtt": [users, "Arn"]}
    ]
    assert [s["Resource"] for s in actions["dynamodb:Query"]] == [index_arn(users, "created-index")]
    assert "dynamodb:Scan" not in actions, "the describe source reads no index in full"
    [put] = actions["cloudwatch:PutMetricData"]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "OpsKit/Users"}}
    _, job = function(prod, "user_metrics.lambda_handler")
    assert job["Environment"]["Variables"]["USER_COUNT_SOURCE"] == "describe"

    users = logical_id(dev, "AWS::DynamoDB::Table", "DataUsers")
    actions = by_action(statements_of(dev, "user_metrics.lambda_handler"))
    assert [s["Resource"] for s in actions["dynamodb:Scan"]] == [index_arn(users, "email-index")]
    [put] = actions["cloudwatch:PutMetricData"]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Shop/Users"}}


# --- Cognito ------------------------------------------------------------------------------


def test_the_user_pool_signs_in_by_verified_email_with_a_strong_password(prod):
    pool = only(resources(prod, "AWS::Cognito::UserPool"))
    properties = pool["Properties"]
    assert properties["UsernameAttributes"] == ["email"]
    assert properties["UsernameConfiguration"] == {"CaseSensitive": False}
    assert properties["AutoVerifiedAttributes"] == ["email"]
    assert properties["Policies"]["PasswordPolicy"] == {
        "MinimumLength": 8,
        "RequireLowercase": True,
        "RequireUppercase": True,
        "RequireNumbers": True,
        "RequireSymbols": True,
        "TemporaryPasswordValidityDays": 3,
    }
    assert properties["MfaConfiguration"] == "OPTIONAL"
    assert properties["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert properties["AdminCreateUserConfig"] == {"AllowAdminCreateUserOnly": True}
    assert properties["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"
    client = only(resources(prod, "AWS::Cognito::UserPoolClient"))
    assert client["DeletionPolicy"] == "Retain", "apps hold its id; kept with the pool"
    client = client["Properties"]
    assert client["GenerateSecret"] is False
    assert client["ExplicitAuthFlows"] == ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_a_dev_pool_is_deletable_and_its_options_apply(dev):
    pool = only(resources(dev, "AWS::Cognito::UserPool"))
    assert pool["Properties"]["DeletionProtection"] == "INACTIVE"
    assert pool["DeletionPolicy"] == "Delete"
    assert only(resources(dev, "AWS::Cognito::UserPoolClient"))["DeletionPolicy"] == "Delete"
    assert pool["Properties"]["MfaConfiguration"] == "ON"
    assert pool["Properties"]["UserPoolTier"] == "PLUS"
    assert pool["Properties"]["UserPoolAddOns"] == {"AdvancedSecurityMode": "ENFORCED"}


def test_an_existing_pool_authorizes_and_none_is_created(staging):
    assert resources(staging, "AWS::Cognito::UserPool") == {}
    authorizer = only(resources(staging, "AWS::ApiGateway::Authorizer"))["Properties"]
    assert authorizer["ProviderARNs"] == [EXISTING_POOL]


# --- the REST API -------------------------------------------------------------------------


def stage(template: Template) -> dict[str, Any]:
    found: dict[str, Any] = only(resources(template, "AWS::ApiGateway::Stage"))
    return found


@pytest.mark.parametrize(
    ("name", "level", "data_trace", "rate", "burst"),
    [
        ("prod", "ERROR", False, 100, 200),
        ("dev", "INFO", True, 20, 40),
        ("staging", "INFO", False, 100, 200),
    ],
)
def test_the_stage_is_named_after_the_environment_logged_traced_measured_and_throttled(
    synthesized, name, level, data_trace, rate, burst
):
    template = synthesized.templates[name]
    found = stage(template)
    properties = found["Properties"]
    assert properties["StageName"] == name
    assert properties["TracingEnabled"] is True
    assert properties["MethodSettings"] == [
        {
            "DataTraceEnabled": data_trace,
            "HttpMethod": "*",
            "LoggingLevel": level,
            "MetricsEnabled": True,
            "ResourcePath": "/*",
            "ThrottlingBurstLimit": burst,
            "ThrottlingRateLimit": rate,
        }
    ]
    access = properties["AccessLogSetting"]
    logged = json.loads(access["Format"])
    assert set(logged) >= {"requestId", "status", "resourcePath", "ip"}
    assert (logged["waf"], logged["wafStatus"]) == (
        "$context.wafResponseCode",
        "$context.waf.status",
    ), "which requests a web ACL blocked, and why a caller got 403 or 429"
    [group_id] = [
        part["Ref"]
        for part in access["DestinationArn"]["Fn::Join"][1]
        if isinstance(part, dict)
        and "Ref" in part
        and part["Ref"].startswith("UsersFrontAccessLogs")
    ]
    group = template.to_json()["Resources"][group_id]["Properties"]
    assert group["RetentionInDays"] > 0


def test_execution_logs_go_to_a_group_created_before_the_stage(synthesized):
    for name, template in synthesized.templates.items():
        found = stage(template)
        [group_id] = [
            k
            for k, g in resources(template, "AWS::Logs::LogGroup").items()
            if "API-Gateway-Execution-Logs_" in json.dumps(g["Properties"].get("LogGroupName"))
        ]
        group = template.to_json()["Resources"][group_id]["Properties"]
        assert json.dumps(group["LogGroupName"]).endswith(f'"/{name}"]]}}')
        assert group["RetentionInDays"] > 0
        assert group_id in found["DependsOn"]


def test_prod_logs_are_encrypted_with_the_stacks_logs_key(prod):
    for group in resources(prod, "AWS::Logs::LogGroup").values():
        assert group["Properties"]["KmsKeyId"]["Fn::GetAtt"][0].startswith("OpsKitLogsKey")


def test_the_account_logging_role_is_set_before_the_stage_and_kept(prod, dev):
    account = only(resources(prod, "AWS::ApiGateway::Account"))
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = prod.to_json()["Resources"][role_id]
    assert role["DeletionPolicy"] == "Retain"
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"
    }
    [account_id] = resources(prod, "AWS::ApiGateway::Account")
    assert account_id in stage(prod)["DependsOn"]
    assert resources(dev, "AWS::ApiGateway::Account") == {}


def test_every_route_of_the_openapi_document_needs_a_cognito_token_and_is_validated(prod):
    document = openapi.load()
    expected = {(op.method, op.operation_id) for op in openapi.operations(document)}
    methods = resources(prod, "AWS::ApiGateway::Method")
    routed = {
        (m["Properties"]["HttpMethod"], m["Properties"]["OperationName"])
        for m in methods.values()
        if m["Properties"]["HttpMethod"] != "OPTIONS"
    }
    assert routed == expected
    authorizer = next(iter(resources(prod, "AWS::ApiGateway::Authorizer")))
    validator_id = next(iter(resources(prod, "AWS::ApiGateway::RequestValidator")))
    validator = prod.to_json()["Resources"][validator_id]["Properties"]
    assert (validator["ValidateRequestBody"], validator["ValidateRequestParameters"]) == (
        True,
        True,
    )
    for method in methods.values():
        properties = method["Properties"]
        if properties["HttpMethod"] == "OPTIONS":
            continue
        assert properties["AuthorizationType"] == "COGNITO_USER_POOLS"
        assert properties["AuthorizerId"] == {"Ref": authorizer}
        assert properties["RequestValidatorId"] == {"Ref": validator_id}
        assert properties["Integration"]["Type"] == "AWS_PROXY"
        assert "UsersApiHandlerAlias" in json.dumps(properties["Integration"]["Uri"])


def test_post_and_put_bodies_are_validated_against_the_documents_schemas(prod):
    schemas = openapi.load()["components"]["schemas"]
    models = {
        m["Properties"]["Name"]: (k, m["Properties"])
        for k, m in resources(prod, "AWS::ApiGateway::Model").items()
    }
    assert set(models) == {"CreateUser", "UpdateUser"}
    for name, (_, model) in models.items():
        schema = dict(model["Schema"])
        assert schema.pop("$schema") == "http://json-schema.org/draft-04/schema#"
        assert schema.pop("title") == name
        assert schema == schemas[name]
    for method, model in (("POST", "CreateUser"), ("PUT", "UpdateUser")):
        [found] = resources(prod, "AWS::ApiGateway::Method", HttpMethod=method).values()
        assert found["Properties"]["RequestModels"] == {
            "application/json": {"Ref": models[model][0]}
        }


def test_path_and_query_parameters_are_declared_from_the_document(prod):
    declared = {
        m["Properties"]["OperationName"]: m["Properties"].get("RequestParameters")
        for m in resources(prod, "AWS::ApiGateway::Method").values()
        if "OperationName" in m["Properties"]
    }
    assert declared["listUsers"] == {
        "method.request.querystring.limit": False,
        "method.request.querystring.next_token": False,
        "method.request.querystring.email": False,
    }
    for operation in ("getUser", "updateUser", "deleteUser"):
        assert declared[operation] == {"method.request.path.user_id": True}


def preflight_origins(template: Template) -> list[str]:
    found = []
    for method in resources(template, "AWS::ApiGateway::Method", HttpMethod="OPTIONS").values():
        properties = method["Properties"]
        assert properties["AuthorizationType"] == "NONE"
        assert properties["Integration"]["Type"] == "MOCK"
        [response] = properties["Integration"]["IntegrationResponses"]
        parameters = response["ResponseParameters"]
        assert parameters["method.response.header.Access-Control-Allow-Headers"] == (
            "'Authorization,Content-Type,X-Request-ID'"
        )
        found.append(parameters["method.response.header.Access-Control-Allow-Origin"])
    return found


def test_cors_preflights_answer_the_allowed_origins_only(prod, dev, staging):
    assert preflight_origins(prod) == ["'https://app.example.com'"] * 2
    for method in resources(prod, "AWS::ApiGateway::Method", HttpMethod="OPTIONS").values():
        [response] = method["Properties"]["Integration"]["IntegrationResponses"]
        template = response["ResponseTemplates"]["application/json"]
        assert "https://admin.example.com" in template, "the other origin is echoed when listed"
    assert preflight_origins(dev) == ["'*'"] * 2
    assert preflight_origins(staging) == [], "no origins, no CORS"


GATEWAY_STATUSES = {
    "UNAUTHORIZED": "401",
    "ACCESS_DENIED": "403",
    "THROTTLED": "429",
    "BAD_REQUEST_BODY": "400",
    "MISSING_AUTHENTICATION_TOKEN": "404",
    "DEFAULT_4XX": None,
    "DEFAULT_5XX": None,
}


def test_api_gateways_own_errors_use_the_handlers_error_format(prod, staging):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources(prod, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert {t: r.get("StatusCode") for t, r in responses.items()} == GATEWAY_STATUSES
    for response in responses.values():
        # WHEN API Gateway fills in its variables
        body = (
            response["ResponseTemplates"]["application/json"]
            .replace("$context.error.messageString", '"Unauthorized"')
            .replace("$context.requestId", "c0ffee")
        )
        # THEN the body is the handler's error shape
        document = json.loads(body)
        assert set(document) == {"error", "details", "request_id"}
        assert document["request_id"] == "c0ffee" and isinstance(document["details"], list)
        headers = response["ResponseParameters"]
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == (
            "'https://app.example.com'"
        )
        assert "X-Request-ID" in headers["gatewayresponse.header.Access-Control-Expose-Headers"]
        assert headers["gatewayresponse.header.Cache-Control"] == "'no-store'"
    for response in resources(staging, "AWS::ApiGateway::GatewayResponse").values():
        headers = response["Properties"]["ResponseParameters"]
        assert not any("Access-Control" in h for h in headers)


def test_a_web_acl_guards_the_stage_when_given(dev, staging):
    association = only(resources(dev, "AWS::WAFv2::WebACLAssociation"))["Properties"]
    assert association["WebACLArn"] == WEB_ACL
    assert "Stage" in json.dumps(association["ResourceArn"])
    assert resources(dev, "AWS::WAFv2::WebACL") == {}
    assert resources(staging, "AWS::WAFv2::WebACLAssociation") == {}


def test_a_firewall_of_the_stages_own_limits_each_client_and_answers_429_in_json(prod):
    [(acl_id, acl)] = resources(prod, "AWS::WAFv2::WebACL").items()
    properties = acl["Properties"]
    assert (properties["Scope"], properties["DefaultAction"]) == ("REGIONAL", {"Allow": {}})
    rules = {rule["Name"]: rule for rule in properties["Rules"]}
    assert list(rules) == [*MANAGED_RULE_GROUPS, RATE_RULE]
    assert [rule["Priority"] for rule in rules.values()] == [0, 1, 2]
    for group in MANAGED_RULE_GROUPS:
        assert rules[group]["OverrideAction"] == {"None": {}}
        assert rules[group]["Statement"] == {
            "ManagedRuleGroupStatement": {"Name": group, "VendorName": "AWS"}
        }
    limit = rules[RATE_RULE]
    assert limit["Statement"] == {
        "RateBasedStatement": {"AggregateKeyType": "IP", "Limit": 500, "EvaluationWindowSec": 120}
    }
    response = limit["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    # The response is WAF's alone: without the stage's CORS headers a browser cannot read it
    assert {h["Name"]: h["Value"] for h in response["ResponseHeaders"]} == {
        "Access-Control-Allow-Origin": "https://app.example.com",
        "Access-Control-Expose-Headers": "X-Request-ID,x-amzn-RequestId",
        "Vary": "Origin",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Retry-After": "120",
    }
    body = properties["CustomResponseBodies"][response["CustomResponseBodyKey"]]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert json.loads(body["Content"]) == {
        "error": "too many requests from this address",
        "details": [],
    }
    association = only(resources(prod, "AWS::WAFv2::WebACLAssociation"))["Properties"]
    stage_id = next(iter(resources(prod, "AWS::ApiGateway::Stage")))
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert {"Ref": stage_id} in association["ResourceArn"]["Fn::Join"][1]


def test_the_web_acls_name_is_its_metric_name_and_follows_its_logical_id(prod):
    """CloudWatch's WebACL dimension is the name; Name is create-only and unique per region,
    so a moved construct (new logical id, created before the old is deleted) needs another."""
    properties = only(resources(prod, "AWS::WAFv2::WebACL"))["Properties"]
    name = properties["Name"]
    assert re.fullmatch(r"[\w-]{1,128}", name)
    assert properties["VisibilityConfig"]["MetricName"] == name
    for rule in properties["Rules"]:
        assert rule["VisibilityConfig"]["MetricName"] == rule["Name"]

    assert firewall_of("Users").name != firewall_of("Customers").name


def firewall_of(id: str, settings: ApiFirewall | None = None) -> StageFirewall:
    """The firewall of a user service built (not synthesized) in a fresh stack."""
    stack = cdk.Stack(make_app(), "Prod")
    service = UserService(
        stack, id, profile=PROD, ses_sender="a@example.com", firewall=settings or ApiFirewall()
    )
    assert service.front.firewall is not None
    return service.front.firewall


def test_the_managed_rules_may_count_instead_of_block_while_the_rate_limit_still_blocks(prod):
    """AWS's advice for rules new to an API already serving traffic: count first."""
    firewall = firewall_of("Users", ApiFirewall(count_managed_rules=True))
    counted = {
        rule["name"]: rule for rule in cdk.Stack.of(firewall).resolve(firewall.web_acl.rules)
    }
    for group in MANAGED_RULE_GROUPS:
        assert counted[group]["overrideAction"] == {"count": {}}
    assert counted[RATE_RULE]["action"]["block"]["customResponse"]["responseCode"] == 429
    blocking = only(resources(prod, "AWS::WAFv2::WebACL"))["Properties"]["Rules"]
    assert [r.get("OverrideAction") for r in blocking[:2]] == [{"None": {}}, {"None": {}}]


# --- alarms and dashboard -----------------------------------------------------------------


def alarms(template: Template, text: str) -> dict[str, dict[str, Any]]:
    found = {}
    for alarm in resources(template, "AWS::CloudWatch::Alarm").values():
        description = alarm["Properties"]["AlarmDescription"]
        if text in description:
            found[description.split("]")[0].strip("[")] = alarm["Properties"]
    return found


def metric_of(alarm: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    for query in alarm["Metrics"]:
        if "MetricStat" in query and (id is None or query["Id"] == id):
            metric: dict[str, Any] = query["MetricStat"]["Metric"]
            return metric
    raise AssertionError(f"no metric {id} in {alarm}")


def test_requests_over_the_rate_limit_warn_from_the_web_acls_own_metric(prod, dev):
    acl = only(resources(prod, "AWS::WAFv2::WebACL"))["Properties"]
    limited = alarms(prod, "per-client rate limit")
    assert {s: a["Threshold"] for s, a in limited.items()} == {"WARNING": 100}
    metric = metric_of(limited["WARNING"])
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/WAFV2", "BlockedRequests")
    dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
    assert dimensions == {
        "WebACL": acl["Name"],
        "Rule": RATE_RULE,
        "Region": {"Ref": "AWS::Region"},
    }
    assert limited["WARNING"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarms(dev, "per-client rate limit") == {}


def test_the_api_alarms_read_this_stage(prod):
    stage_id = next(iter(resources(prod, "AWS::ApiGateway::Stage")))
    rate = alarms(prod, "5XX status (% of requests)")
    assert {s: a["Threshold"] for s, a in rate.items()} == {"WARNING": 1, "CRITICAL": 5}
    errors = metric_of(rate["CRITICAL"], "errors")
    assert errors["MetricName"] == "5XXError"
    dimensions = {d["Name"]: d["Value"] for d in errors["Dimensions"]}
    assert dimensions["Stage"] == {"Ref": stage_id}
    client = alarms(prod, "4XX status")
    assert {s: (a["MetricName"], a["Threshold"]) for s, a in client.items()} == {
        "WARNING": ("4XXError", 100)
    }
    latency = alarms(prod, "p99 API latency")
    assert {s: a["ExtendedStatistic"] for s, a in latency.items()} == {
        "WARNING": "p99",
        "CRITICAL": "p99",
    }
    assert latency["CRITICAL"]["Threshold"] == 3000
    assert latency["CRITICAL"]["DatapointsToAlarm"] == 2


@pytest.mark.parametrize("kind", ["reads", "writes"])
def test_throttles_of_the_table_and_both_indexes_alarm(prod, kind):
    found = alarms(prod, f"throttled {kind} of the users table")
    assert set(found) == {"WARNING", "CRITICAL"}
    alarm = found["WARNING"]
    indexes = sorted(
        {d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"]}.get(
            "GlobalSecondaryIndexName", "-"
        )
        for q in alarm["Metrics"]
        if "MetricStat" in q
    )
    assert indexes == ["-", "created-index", "email-index"]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1


def test_the_oldest_email_waiting_alarms(prod):
    found = alarms(prod, "oldest e-mail waiting")
    assert {s: a["Threshold"] for s, a in found.items()} == {"WARNING": 300, "CRITICAL": 1800}
    assert found["WARNING"]["MetricName"] == "ApproximateAgeOfOldestMessage"


def test_every_dead_letter_queue_has_a_depth_alarm(prod):
    dead_letter_queues = {
        (q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0])
        for q in resources(prod, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    subscription = only(resources(prod, "AWS::SNS::Subscription"))["Properties"]
    dead_letter_queues.add(subscription["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0])
    destinations = {
        c["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        for c in resources(prod, "AWS::Lambda::EventInvokeConfig").values()
        if "DestinationConfig" in c["Properties"]
    }
    schedules = {
        s["Properties"]["Target"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for s in resources(prod, "AWS::Scheduler::Schedule").values()
    }
    every = dead_letter_queues | destinations | schedules
    assert len(every) == 7, "async (4 functions), subscription, e-mail redrive, schedule"
    alarmed = {
        d["Value"]["Fn::GetAtt"][0]
        for a in resources(prod, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        for d in a["Properties"]["Dimensions"]
    }
    assert every <= alarmed


@pytest.mark.parametrize(("name", "enabled"), [("prod", True), ("dev", False)])
def test_alarm_actions_follow_the_profile(synthesized, name, enabled):
    found = alarms(synthesized.templates[name], "Users:")
    assert found
    assert {a["ActionsEnabled"] for a in found.values()} == {enabled}


def test_the_dashboard_shows_the_api_the_table_and_the_email_queue(prod):
    body = json.dumps(only(resources(prod, "AWS::CloudWatch::Dashboard"))["Properties"])
    for title in (
        "API requests and errors",
        "API latency",
        "Users table throttles",
        "E-mail queue",
        "Users/ApiHandler",
        "Users/Events/EmailSender",
        "Users/Metrics",
    ):
        assert title in body


# --- scanners and refusals ----------------------------------------------------------------


def test_cdk_nag_reports_nothing_for_stacks_of_only_the_service(synthesized):
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in synthesized.validation_report["pluginReports"]
        for violation in plugin.get("violations", [])
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []


def test_cfn_lint_reports_nothing_for_the_stack_with_every_option(synthesized, scan_cache):
    returncode, stdout, stderr = cfn_lint([synthesized.files["dev"]], scan_cache).result()
    assert returncode == 0, stdout + stderr


def fresh() -> cdk.Stack:
    return cdk.Stack(make_app(), "Fresh")


@pytest.mark.parametrize(
    ("profile", "props", "message"),
    [
        (PROD, {"allowed_origins": ["*"]}, "origin '\\*' is refused by profile 'prod'"),
        (DEV, {"allowed_origins": ["*", "https://a.example.com"]}, "cannot be listed with"),
        (DEV, {"allowed_origins": ["https://a.example.com/"]}, "is not scheme://host"),
        (DEV, {"allowed_origins": ["https://a.io", "https://a.io"]}, "one more than once"),
        (DEV, {"ses_sender": "Ops <ops@example.com>"}, "is not one plain e-mail address"),
        (DEV, {"ses_configuration_set": "a b"}, "is not an SES configuration set"),
        (DEV, {"sender_concurrency": 1}, "sender_concurrency must be 2-1000"),
        (DEV, {"throttling": ApiThrottling(rate_limit=0)}, "throttling must be"),
        (DEV, {"throttling": ApiThrottling(burst_limit=6000)}, "throttling must be"),
        (DEV, {"user_count_source": "guess"}, "user_count_source must be one of"),
        (DEV, {"firewall": ApiFirewall(requests_per_client=9)}, "must be 10 to 2000000000"),
        (DEV, {"firewall": ApiFirewall(window_seconds=90)}, "must be one of 60, 120, 300, 600"),
        (
            DEV,
            {"firewall": ApiFirewall(), "web_acl_arn": WEB_ACL},
            "give web_acl_arn or firewall, not both",
        ),
    ],
)
def test_bad_props_fail_at_synth_with_one_line_naming_the_construct(profile, props, message):
    stack = fresh()
    props = {"ses_sender": "no-reply@example.com", **props}
    with pytest.raises(PropsError, match=message) as error:
        UserService(stack, "Users", profile=profile, **props)
    assert re.match(r"^Fresh/Users: ", str(error.value)) and "\n" not in str(error.value)


def deployment_id(**packaging: str) -> str:
    app = make_app()
    app.node.set_context(PACKAGING_CONTEXT, packaging)
    stack = cdk.Stack(app, "Prod")
    UserService(stack, "Users", profile=PROD, ses_sender="no-reply@example.com")
    [logical_id] = Template.from_stack(stack).find_resources("AWS::ApiGateway::Deployment")
    return str(logical_id)


def test_a_replaced_handler_gets_a_new_stage_deployment_and_nothing_else_does():
    """A packaging switch replaces the function and its alias; the stage's deployment must
    follow, or it keeps calling the deleted one."""
    zip_id = deployment_id()
    assert deployment_id(**{"user_service.api": "image"}) != zip_id
    assert deployment_id(**{"user_service.email_sender": "image"}) == zip_id
