"""The key guard: a critical alert when a KMS key of the stack is disabled or doomed."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template

from opskit import DEV, PROD, Monitoring
from opskit.constructs.encrypted import data_key
from tests.synth import as_list, make_app

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DISABLE_KEY: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "AWS API Call via CloudTrail",
    "source": "aws.kms",
    "account": "111122223333",
    "time": "2026-11-29T21:11:26Z",
    "region": "eu-west-1",
    "resources": [],
    "detail": {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "arn": "arn:aws:iam::111122223333:user/Alice",
            "accountId": "111122223333",
        },
        "eventTime": "2026-11-29T21:11:26Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "DisableKey",
        "awsRegion": "eu-west-1",
        "requestParameters": {"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab"},
        "responseElements": None,
        "readOnly": False,
        "resources": [
            {"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": KEY_ARN},
        ],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
    },
}
"""KMS's documented CloudTrail record of DisableKey, as EventBridge delivers it."""


def event(**detail: Any) -> dict[str, Any]:
    changed = copy.deepcopy(DISABLE_KEY)
    changed["detail"].update(detail)
    return changed


SCHEDULE_KEY_DELETION = event(
    eventName="ScheduleKeyDeletion",
    requestParameters={"keyId": KEY_ARN, "pendingWindowInDays": 7},
    responseElements={"keyId": KEY_ARN, "keyState": "PendingDeletion", "pendingWindowInDays": 7},
)


def matches(pattern: Any, value: Any) -> bool:
    """EventBridge's matching, for what the key guard's pattern uses: a list of values,
    `exists` and `anything-but` filters matches a field (an array if any element does), a
    field under an array of objects is looked for in each object (event-ruler's array
    crushing), and `$or` takes any of its patterns."""
    if isinstance(value, list) and isinstance(pattern, dict):
        return any(matches(pattern, item) for item in value)
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(
            any(matches(option, value) for option in rule)
            if field == "$or"
            else matches(rule, value.get(field, _ABSENT))
            for field, rule in pattern.items()
        )
    values = as_list(value)
    for accepted in pattern:
        if isinstance(accepted, dict) and "exists" in accepted:
            if (value is not _ABSENT) == accepted["exists"]:
                return True
        elif isinstance(accepted, dict) and "anything-but" in accepted:
            if value is not _ABSENT and not set(values) & set(accepted["anything-but"]):
                return True
        elif value is not _ABSENT and accepted in values:
            return True
    return False


_ABSENT = object()


@pytest.fixture(scope="module")
def guarded() -> Mapping[str, Any]:
    """prod: a stack with a Monitoring, the stack's data key and a key of the app's own,
    beside a stack with a key that no Monitoring of its stack watches."""
    app = make_app()
    stack = cdk.Stack(app, "Ops")
    Monitoring(stack, "Monitoring", profile=PROD)
    data_key(stack, PROD)
    kms.Key(stack, "Mine")
    other = cdk.Stack(app, "Other")
    kms.Key(other, "Elsewhere")
    return Template.from_stack(stack).to_json()


def key_guard(template: Mapping[str, Any]) -> dict[str, Any]:
    [rule] = [
        resource
        for id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Events::Rule" and "KeyGuard" in id
    ]
    return rule["Properties"]


def logical_id(value: dict[str, Any]) -> str:
    assert value["Fn::GetAtt"][1] == "Arn"
    return str(value["Fn::GetAtt"][0])


def test_it_watches_every_key_made_in_its_stack_and_none_of_another_stacks(guarded):
    pattern = key_guard(guarded)["EventPattern"]
    watched = {logical_id(arn) for arn in pattern["detail"]["resources"]["ARN"]}
    keys = {id for id, r in guarded["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    assert watched == keys
    for made in ("MonitoringAlertsKey", "OpsKitDataKey", "Mine"):
        assert any(key.startswith(made) for key in keys), made


def with_key_arn(pattern: dict[str, Any]) -> dict[str, Any]:
    """The pattern as deployed for one key: the sample events'."""
    deployed = copy.deepcopy(pattern)
    deployed["detail"]["resources"]["ARN"] = [KEY_ARN]
    return deployed


def test_disabling_a_watched_key_or_scheduling_its_deletion_matches(guarded):
    pattern = with_key_arn(key_guard(guarded)["EventPattern"])
    assert matches(pattern, DISABLE_KEY)
    assert matches(pattern, SCHEDULE_KEY_DELETION)


def test_a_refused_call_another_key_or_another_call_does_not(guarded):
    pattern = with_key_arn(key_guard(guarded)["EventPattern"])
    assert not matches(pattern, event(errorCode="AccessDenied"))
    other_key = KEY_ARN.replace("1234abcd", "9999ffff")
    assert not matches(pattern, event(resources=[{"type": "AWS::KMS::Key", "ARN": other_key}]))
    assert not matches(pattern, event(eventName="EnableKey"))
    assert not matches(pattern, event(eventName="PutKeyPolicy")), "every key policy deployment"


def test_calls_cloudformation_makes_tearing_down_a_stack_page_nobody_and_others_do(guarded):
    pattern = with_key_arn(key_guard(guarded)["EventPattern"])
    caller = DISABLE_KEY["detail"]["userIdentity"]
    by_cloudformation = {**caller, "invokedBy": "cloudformation.amazonaws.com"}
    assert not matches(pattern, event(userIdentity=by_cloudformation))
    through_another_service = {**caller, "invokedBy": "ssm.amazonaws.com"}
    assert matches(pattern, event(userIdentity=through_another_service))


def test_synth_refuses_more_keys_than_an_event_pattern_can_name():
    app = make_app()
    stack = cdk.Stack(app, "Keys")
    Monitoring(stack, "Monitoring", profile=PROD)
    for n in range(18):
        kms.CfnKey(stack, f"Key{n}")
    with pytest.raises(RuntimeError, match=r"watches 19 KMS keys of stack Keys; .* holds 18 "):
        app.synth()


def value_at(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for field in path.removeprefix("$.").split("."):
        value = value[field]
    return value


def test_the_alert_says_what_happened_who_did_it_and_how_to_undo_it(guarded):
    [target] = key_guard(guarded)["Targets"]
    transformer = target["InputTransformer"]
    for sample in (DISABLE_KEY, SCHEDULE_KEY_DELETION):
        filled = json.loads(transformer["InputTemplate"])
        for name, path in transformer["InputPathsMap"].items():
            filled = filled.replace(f"<{name}>", str(value_at(sample, path)))
        assert "<" not in filled, "every placeholder is a field of KMS's event"
        assert sample["detail"]["eventName"] in filled
        assert "IAMUser arn:aws:iam::111122223333:user/Alice" in filled
        assert "1234abcd-12ab-34cd-56ef-1234567890ab" in filled
        assert "opskit prod" in filled
        assert "cancel-key-deletion" in filled and "enable-key" in filled


def test_it_pages_the_critical_topic_and_what_cannot_be_published_waits_in_a_queue(guarded):
    [target] = key_guard(guarded)["Targets"]
    resources = guarded["Resources"]
    topic = target["Arn"]["Ref"]
    assert topic.startswith("MonitoringCriticalTopic")
    queue = logical_id(target["DeadLetterConfig"]["Arn"])
    assert queue.startswith("MonitoringUndeliveredAlerts")
    [queue_policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue} in r["Properties"]["Queues"]
    ]
    rule_id = next(id for id in resources if "KeyGuard" in id)
    assert {
        "Action": "sqs:SendMessage",
        "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}},
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Resource": {"Fn::GetAtt": [queue, "Arn"]},
    }.items() <= next(
        statement
        for statement in queue_policy["Statement"]
        if statement["Principal"] == {"Service": "events.amazonaws.com"}
    ).items()


def test_eventbridge_may_publish_to_the_critical_topic_and_use_its_key(guarded):
    """EventBridge's guide: topic policies for it take no conditions."""
    resources = guarded["Resources"]
    [topic_policy] = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in resources.values()
        if r["Type"] == "AWS::SNS::TopicPolicy"
        and r["Properties"]["Topics"][0]["Ref"].startswith("MonitoringCriticalTopic")
    ]
    assert any(
        s["Principal"] == {"Service": "events.amazonaws.com"} and s["Action"] == "sns:Publish"
        for s in topic_policy
    )
    [key] = [r for id, r in resources.items() if id.startswith("MonitoringAlertsKey")]
    assert any(
        "events.amazonaws.com" in json.dumps(s["Principal"])
        and set(s["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        and "Condition" not in s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
    )


def test_it_is_enabled_where_the_profile_enables_alarm_actions(guarded):
    assert key_guard(guarded)["State"] == "ENABLED"
    app = make_app()
    stack = cdk.Stack(app, "Dev")
    Monitoring(stack, "Monitoring", profile=DEV)
    assert not DEV.alarm_actions_enabled
    assert key_guard(Template.from_stack(stack).to_json())["State"] == "DISABLED"
