"""Acknowledging scanners' findings, and what a stack holds once: how opskit marks its
resources for cdk-nag, checkov and cfn-lint, and keeps one logs key, data key and layer per
stack."""

from __future__ import annotations

import dataclasses

import aws_cdk as cdk
import pytest
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template
from constructs import Construct

from opskit import DEV, PROD, PropsError, common_layer
from opskit.constructs.compliance import acknowledge, acknowledge_each
from opskit.constructs.encrypted import allow_table_key_use, data_key, logs_key, table
from tests.synth import cfn_resource, make_app


def metadata(resource: cdk.CfnResource) -> dict:
    return {key: resource.get_metadata(key) for key in ("checkov", "cfn-lint", "opskit")}


def test_each_finding_goes_to_its_scanners_own_skip_with_its_reason():
    queue = sqs.Queue(cdk.Stack(make_app(), "Marked"), "Queue")
    acknowledge_each(queue, {"CKV_AWS_27": "checkov's", "ES6000": "cfn-lint's"})
    assert metadata(cfn_resource(queue, sqs.CfnQueue)) == {
        "checkov": {"skip": [{"id": "CKV_AWS_27", "comment": "checkov's"}]},
        "cfn-lint": {"config": {"ignore_checks": ["ES6000"]}},
        "opskit": {"reasons": {"ES6000": "cfn-lint's"}},
    }


def test_acknowledgements_through_any_proxy_of_a_resource_add_up():
    queue = sqs.Queue(cdk.Stack(make_app(), "Twice"), "Queue")
    resource = cfn_resource(queue, sqs.CfnQueue)
    acknowledge(queue, "CKV_AWS_27", "first")
    acknowledge(resource, ["CKV_AWS_27", "CKV_AWS_1"], "second")
    acknowledge(queue, "ES6000", "third")
    skips = metadata(resource)["checkov"]["skip"]
    assert skips == [
        {"id": "CKV_AWS_27", "comment": "first"},
        {"id": "CKV_AWS_1", "comment": "second"},
    ]
    assert metadata(resource)["cfn-lint"] == {"config": {"ignore_checks": ["ES6000"]}}


def test_what_the_resource_already_held_is_kept():
    resource = sqs.CfnQueue(cdk.Stack(make_app(), "Held"), "Queue")
    resource.add_metadata("checkov", {"skip": [{"id": "CKV_AWS_1", "comment": "theirs"}]})
    resource.add_metadata(
        "cfn-lint", {"config": {"ignore_checks": ["W3045"], "regions": ["eu-west-1"]}}
    )
    acknowledge_each(resource, {"CKV_AWS_27": "ours", "E3001": "ours too"})
    assert metadata(resource)["checkov"]["skip"] == [
        {"id": "CKV_AWS_1", "comment": "theirs"},
        {"id": "CKV_AWS_27", "comment": "ours"},
    ]
    assert metadata(resource)["cfn-lint"] == {
        "config": {"ignore_checks": ["W3045", "E3001"], "regions": ["eu-west-1"]}
    }


def test_a_stack_holds_one_logs_key_and_one_layer_however_many_ask():
    stack = cdk.Stack(make_app(), "Once")
    nested = cdk.NestedStack(stack, "Nested")
    deep = sqs.Queue(stack, "Deep")
    assert logs_key(stack, PROD) is logs_key(deep, PROD)
    assert data_key(stack, PROD) is data_key(deep, PROD) is not logs_key(stack, PROD)
    assert data_key(stack, DEV) is None, "dev keeps data under the AWS managed keys"
    assert common_layer(stack) is common_layer(stack)
    assert common_layer(nested) is not common_layer(stack), "a nested stack is a stack of its own"


def test_the_data_key_is_kept_when_anything_under_it_is():
    """Asked for first by a disposable profile, then by prod's: a deleted key would leave
    prod's retained tables and secrets unreadable."""
    stack = cdk.Stack(make_app(), "Mixed")
    disposable = dataclasses.replace(DEV, name="qa", encrypt_data=True)
    key = data_key(stack, disposable)
    assert key is not None and data_key(stack, PROD) is key
    [resource] = [c for c in key.node.children if isinstance(c, kms.CfnKey)]
    assert resource.cfn_options.deletion_policy == cdk.CfnDeletionPolicy.RETAIN


def test_a_construct_of_opskits_id_already_in_the_stack_is_refused_in_one_line():
    stack = cdk.Stack(make_app(), "Taken")
    kms.Key(stack, "OpsKitLogsKey")
    with pytest.raises(PropsError, match="opskit keeps its own 'OpsKitLogsKey' in each stack"):
        logs_key(stack, PROD)


def test_only_the_data_key_opskit_made_spares_a_table_caller_a_statement_of_its_own():
    """The data key's policy already lets the account's callers in through DynamoDB; a key
    of the caller's, even one of the same id elsewhere in the tree, does not."""
    stack = cdk.Stack(make_app(), "Keys")
    caller = iam.Role(stack, "Caller", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    ours = table(stack, "Ours", profile=PROD, partition_key="id", holds="nothing")
    elsewhere = Construct(stack, "Theirs")
    theirs = dynamodb.Table(
        elsewhere,
        "Table",
        partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=kms.Key(elsewhere, "OpsKitDataKey"),
    )
    allow_table_key_use(ours, caller)
    allow_table_key_use(theirs, caller)
    [policy] = Template.from_stack(stack).find_resources("AWS::IAM::Policy").values()
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"]["Fn::GetAtt"][0].startswith("TheirsOpsKitDataKey")
