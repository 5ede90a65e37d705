"""How `make invoke` reads the references in a function's variables (opskit_local.resources):
CloudFormation's own rules for each intrinsic it evaluates, and one line for the rest.

Names, ARNs and parameters need no emulator; what a reference creates is checked on moto."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from opskit_local.catalog import Catalog
from opskit_local.emulator import client
from opskit_local.errors import LocalError
from opskit_local.resources import Resolver, Where

TEMPLATE = {
    "Parameters": {"Stage": {"Type": "String", "Default": "dev"}, "Unset": {"Type": "String"}},
    "Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Worker": {"Type": "AWS::Lambda::Function", "Properties": {"FunctionName": "worker"}},
        "Live": {
            "Type": "AWS::Lambda::Alias",
            "Properties": {"FunctionName": {"Ref": "Worker"}, "Name": "LIVE"},
        },
    },
}
HERE = Where("notification", "TARGET")
TABLE = {
    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
}


def no_emulator(service: str) -> Any:
    raise AssertionError(f"no {service} client is needed to read names")


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(
        TEMPLATE,
        clients=no_emulator,
        region="eu-north-1",
        stack_name="opskit-dev",
        webhook_url="http://127.0.0.1:9/unused",
    )


@pytest.mark.parametrize(
    ("node", "value"),
    [
        ("plain", "plain"),
        (3, "3"),
        (True, "true"),
        ({"Ref": "AWS::Region"}, "eu-north-1"),
        ({"Ref": "AWS::Partition"}, "aws"),
        ({"Ref": "Stage"}, "dev"),
        ({"Ref": "Role"}, "opskit-dev-Role"),
        ({"Fn::GetAtt": ["Role", "Arn"]}, "arn:aws:iam::123456789012:role/opskit-dev-Role"),
        ({"Fn::GetAtt": "Worker.Arn"}, "arn:aws:lambda:eu-north-1:123456789012:function:worker"),
        ({"Ref": "Live"}, "arn:aws:lambda:eu-north-1:123456789012:function:worker:LIVE"),
        ({"Fn::Join": ["-", ["a", {"Ref": "AWS::AccountId"}, 3]]}, "a-123456789012-3"),
        (
            {"Fn::Sub": "${AWS::StackName}/${Stage}/${Worker.Arn}"},
            "opskit-dev/dev/arn:aws:lambda:eu-north-1:123456789012:function:worker",
        ),
        ({"Fn::Sub": "${!Literal} and ${Stage}"}, "${Literal} and dev"),
        ({"Fn::Sub": ["${Name}-${Stage}", {"Name": {"Ref": "Worker"}}]}, "worker-dev"),
        ({"Fn::Sub": ["${Stage}", {"Stage": "given"}]}, "given"),
        ({"Fn::Select": [1, ["a", {"Ref": "Stage"}]]}, "dev"),
        ({"Fn::Select": ["2", {"Fn::Split": [",", "x,y,z"]}]}, "z"),
        ({"Fn::Select": [0, {"Fn::Split": [":", {"Fn::GetAtt": ["Worker", "Arn"]}]}]}, "arn"),
    ],
)
def test_each_intrinsic_is_evaluated_as_cloudformation_does(resolver, node, value):
    assert resolver.value(node, HERE) == value


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"Ref": "Unset"}, "refers to parameter Unset, which has no default"),
        ({"Ref": "Missing"}, "refers to Missing, which the template does not have"),
        ({"Fn::If": ["IsProd", "a", "b"]}, "uses Fn::If, which local invoke does not evaluate"),
        (
            {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
            'selects from {"Fn::GetAZs": ""}, which is not a list',
        ),
        ({"Ref": "Stage", "Extra": 1}, 'has a value local invoke cannot read: {"Ref": '),
        (
            {"Fn::GetAtt": ["Role", "Nope"]},
            "refers to Nope of AWS::IAM::Role Role, which local invoke does not stand in for"
            " (it has Arn, Ref, RoleId)",
        ),
    ],
)
def test_what_it_cannot_evaluate_is_one_line_naming_function_and_variable(resolver, node, message):
    with pytest.raises(LocalError) as raised:
        resolver.value(node, HERE)
    assert str(raised.value).startswith(f"notification: TARGET {message}")


# --- what a reference creates on the emulator ------------------------------------------


def on_emulator(
    moto_endpoint: str, resources: dict[str, Any], *, region: str = "eu-north-1"
) -> Resolver:
    return Resolver(
        {"Resources": resources},
        clients=lambda service: client(service, moto_endpoint, region=region),
        region=region,
        stack_name=f"refs-{uuid.uuid4().hex[:8]}",
        webhook_url="http://127.0.0.1:9/hook",
    )


def test_fifo_topics_and_queues_get_their_suffix_once(moto_endpoint):
    resolver = on_emulator(
        moto_endpoint,
        {
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"FifoTopic": True}},
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"FifoQueue": True}},
            "Named": {
                "Type": "AWS::SQS::Queue",
                "Properties": {"FifoQueue": True, "QueueName": "orders.fifo"},
            },
            "Plain": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "PlainTopic": {"Type": "AWS::SNS::Topic", "Properties": {}},
        },
    )
    assert resolver.value({"Fn::GetAtt": ["Topic", "TopicName"]}, HERE).endswith("-Topic.fifo")
    assert resolver.value({"Fn::GetAtt": ["Queue", "QueueName"]}, HERE).endswith("-Queue.fifo")
    assert resolver.value({"Fn::GetAtt": ["Named", "QueueName"]}, HERE) == "orders.fifo"
    assert resolver.value({"Fn::GetAtt": ["Plain", "Arn"]}, HERE).endswith("-Plain")
    assert resolver.value({"Fn::GetAtt": ["PlainTopic", "TopicName"]}, HERE).endswith("-PlainTopic")


def test_secrets_hold_their_generated_document_or_the_webhook_stand_ins_url(moto_endpoint):
    region = "eu-north-1"
    generated = {
        "GenerateSecretString": {
            "SecretStringTemplate": '{"username": "ops"}',
            "GenerateStringKey": "password",
        }
    }
    resolver = on_emulator(
        moto_endpoint,
        {
            "Login": {"Type": "AWS::SecretsManager::Secret", "Properties": generated},
            "Hook": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        },
        region=region,
    )
    secrets = client("secretsmanager", moto_endpoint, region=region)
    login = resolver.value({"Ref": "Login"}, HERE)
    document = json.loads(secrets.get_secret_value(SecretId=login)["SecretString"])
    assert document["username"] == "ops"
    assert len(document["password"]) == 48
    hook = resolver.value({"Ref": "Hook"}, Where("notification", "teamsWebhookSecretArn"))
    assert secrets.get_secret_value(SecretId=hook)["SecretString"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize("region", ["us-east-1", "eu-north-1"])
def test_buckets_are_made_in_any_region_us_east_1_included(moto_endpoint, region):
    resolver = on_emulator(moto_endpoint, {"Data": {"Type": "AWS::S3::Bucket"}}, region=region)
    name = resolver.value({"Ref": "Data"}, HERE)
    s3 = client("s3", moto_endpoint, region=region)
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert name == name.lower()


@pytest.mark.parametrize(
    ("kind", "properties", "name_of", "limit"),
    [
        ("AWS::SNS::Topic", {}, "TopicName", 251),
        ("AWS::SNS::Topic", {"FifoTopic": True}, "TopicName", 256),
        ("AWS::SQS::Queue", {}, "QueueName", 75),
        ("AWS::SQS::Queue", {"FifoQueue": True}, "QueueName", 80),
        ("AWS::DynamoDB::Table", TABLE, "Ref", 255),
        ("AWS::S3::Bucket", {}, "Ref", 63),
        ("AWS::SSM::Parameter", {"Value": "v"}, "Ref", 1011),
        ("AWS::SES::ConfigurationSet", {}, "Ref", 64),
        ("AWS::Lambda::Function", {}, "Ref", 64),
        ("AWS::IAM::Role", {}, "Ref", 64),
    ],
)
def test_a_long_logical_id_makes_a_name_cut_to_the_services_limit(
    moto_endpoint, kind, properties, name_of, limit
):
    logical_id = "Long" * 300
    resolver = on_emulator(moto_endpoint, {logical_id: {"Type": kind, "Properties": properties}})
    name = resolver.value({"Fn::GetAtt": [logical_id, name_of]}, HERE)
    assert len(name) == limit
    assert name.startswith(f"{resolver.stack_name}-")


def test_a_long_secret_name_is_cut_to_512_characters(moto_endpoint):
    resolver = on_emulator(moto_endpoint, {"L" * 600: {"Type": "AWS::SecretsManager::Secret"}})
    arn = resolver.value({"Ref": "L" * 600}, HERE)
    secrets = client("secretsmanager", moto_endpoint, region="eu-north-1")
    assert len(secrets.describe_secret(SecretId=arn)["Name"]) == 512


# --- which functions a template has ------------------------------------------------------


def test_the_catalog_reads_opskit_functions_with_lambdas_defaults_where_the_template_is_silent():
    catalog = Catalog.of(
        {
            "Resources": {
                "Image": {
                    "Type": "AWS::Lambda::Function",
                    "Metadata": {"opskit:function": "user_service.api"},
                    "Properties": {"PackageType": "Image"},
                },
                "Zip": {
                    "Type": "AWS::Lambda::Function",
                    "Metadata": {"opskit:function": "backup"},
                    "Properties": {
                        "Handler": "app.lambda_handler",
                        "MemorySize": 512,
                        "Timeout": 60,
                        "LoggingConfig": {"ApplicationLogLevel": "WARN"},
                        "Environment": {"Variables": {"A": "1"}},
                    },
                },
                "Foreign": {"Type": "AWS::Lambda::Function", "Properties": {}},
                "NotAFunction": {
                    "Type": "AWS::Lambda::Alias",
                    "Metadata": {"opskit:function": "notification"},
                },
            }
        }
    )
    assert catalog.names == ["backup", "user_service.api"]
    image = catalog.get("user_service.api")
    assert (image.module, image.attribute) == ("api", "lambda_handler")
    assert (image.memory_mb, image.timeout_seconds, image.log_level) == (128, 3, None)
    assert image.variables == {}
    backup = catalog.get("Zip")
    assert (backup.folder.name, backup.module, backup.attribute) == (
        "backup",
        "app",
        "lambda_handler",
    )
    assert (backup.memory_mb, backup.timeout_seconds, backup.log_level) == (512, 60, "WARN")
    assert backup.variables == {"A": "1"}
