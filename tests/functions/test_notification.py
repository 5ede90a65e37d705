"""Specification of the deployment notifier (opskit/functions/notification/app.py).

The handler runs for real: Secrets Manager is moto's server reached via AWS_ENDPOINT_URL,
and the Slack/Teams webhook is a local HTTP server that records what it receives.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest
from botocore.loaders import create_loader
from opskit_common.config import ConfigurationError
from opskit_common.events import MalformedEventError
from opskit_common.http import CircuitOpenError, DeliveryError
from opskit_common.secrets import SecretError

from tests.functions.conftest import REGION, LambdaContext, load_handler
from tests.functions.stand_ins import Reply, Sleeps, WebhookServer

ACCOUNT = "123456789012"
EXECUTION_ID = "3a1e0c4b-5f7a-4d2e-9c1b-8e6f0a2d4c11"
EVENT_TIME = "2026-11-25T10:15:30Z"
EVENT_EPOCH = int(datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC).timestamp())
CONSOLE_URL = (
    f"https://{REGION}.console.aws.amazon.com/codesuite/codepipeline/pipelines/"
    f"web-app/executions/{EXECUTION_ID}/timeline?region={REGION}"
)


def pipeline_event(state: str = "SUCCEEDED", **detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "a1b2c3d4-0000-0000-0000-000000000000",
        "detail-type": "CodePipeline Pipeline Execution State Change",
        "source": "aws.codepipeline",
        "account": ACCOUNT,
        "time": EVENT_TIME,
        "region": REGION,
        "resources": [f"arn:aws:codepipeline:{REGION}:{ACCOUNT}:web-app"],
        "detail": {
            "pipeline": "web-app",
            "execution-id": EXECUTION_ID,
            "state": state,
            "version": 3,
            **detail,
        },
    }


def stage_event(state: str = "FAILED") -> dict[str, Any]:
    event = pipeline_event(state, stage="Deploy")
    event["detail-type"] = "CodePipeline Stage Execution State Change"
    return event


def action_event(state: str = "STARTED") -> dict[str, Any]:
    event = pipeline_event(state, stage="Deploy", action="CreateChangeSet")
    event["detail-type"] = "CodePipeline Action Execution State Change"
    return event


def alarm_event(state: str = "ALARM", previous: str = "OK") -> dict[str, Any]:
    """What EventBridge sends for a CloudWatch alarm state change."""
    name = "opskit-prod-undelivered-alerts"
    return {
        "version": "0",
        "id": "c4d5e6f7-0000-0000-0000-000000000000",
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": ACCOUNT,
        "time": EVENT_TIME,
        "region": REGION,
        "resources": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"],
        "detail": {
            "alarmName": name,
            "state": {
                "value": state,
                "reason": "Threshold Crossed: 1 datapoint [2.0] was >= the threshold (1.0).",
                "timestamp": "2026-11-25T10:15:30.000+0000",
            },
            "previousState": {"value": previous, "reason": "", "timestamp": EVENT_TIME},
            "configuration": {"description": "[WARNING] alert e-mails SNS could not deliver"},
        },
    }


SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def make_secret(secretsmanager: Any) -> Callable[[str], str]:
    def make(value: str) -> str:
        name = f"opskit/webhook-{uuid.uuid4().hex[:12]}"
        return str(secretsmanager.create_secret(Name=name, SecretString=value)["ARN"])

    return make


@pytest.fixture
def secret_arn(make_secret: Callable[[str], str], webhook: WebhookServer) -> str:
    return make_secret(webhook.url)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def new_webhook() -> Iterator[WebhookServer]:
    """Where a rotated secret points: another webhook URL."""
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture
def notifier(
    aws_environment: str, secret_arn: str, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """The handler module, freshly imported (cold start), configured for Slack."""
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", secret_arn)
    monkeypatch.delenv("WEBHOOK_FORMAT", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "deployment-notifier-test")
    module = load_handler("notification")
    monkeypatch.setattr(module, "retry_sleep", sleeps)
    return module


class _EverythingFormatter(logging.Formatter):
    """The message, traceback and every attribute (extra keys included) of a record."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{super().format(record)} {vars(record)!r}"


@pytest.fixture
def all_output(
    notifier: ModuleType, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], str]]:
    """Everything the function could log, at DEBUG: its own logger, root, stdout and stderr."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_EverythingFormatter())
    service_logger = logging.getLogger(notifier.logger.name)
    previous_level = service_logger.level
    service_logger.addHandler(handler)
    service_logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capsys.readouterr()
        return "\n".join([stream.getvalue(), caplog.text, repr(caplog.records), out, err])

    yield text
    service_logger.removeHandler(handler)
    service_logger.setLevel(previous_level)


def body(result: dict[str, Any]) -> dict[str, Any]:
    assert result["statusCode"] == 200
    return json.loads(result["body"])


def field_values(attachment: dict[str, Any]) -> dict[str, str]:
    return {f["title"]: f["value"] for f in attachment["fields"]}


# --- Slack ------------------------------------------------------------------------------


def test_given_pipeline_success_when_notified_then_slack_gets_a_green_attachment(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    result = notifier.lambda_handler(pipeline_event("SUCCEEDED"), lambda_context)

    assert body(result) == {
        "delivered": True,
        "format": "slack",
        "pipeline": "web-app",
        "executionId": EXECUTION_ID,
        "state": "SUCCEEDED",
        "stage": None,
        "action": None,
    }
    [request] = webhook.requests
    [attachment] = request.json()["attachments"]
    assert attachment["color"] == "good"
    assert attachment["title"] == "web-app: SUCCEEDED"
    assert attachment["title_link"] == CONSOLE_URL
    assert attachment["ts"] == EVENT_EPOCH
    assert field_values(attachment) == {
        "Pipeline": "web-app",
        "State": "SUCCEEDED",
        "Execution": EXECUTION_ID,
        "Account / Region": f"{ACCOUNT} / {REGION}",
    }


@pytest.mark.parametrize(
    ("state", "colour"),
    [
        ("SUCCEEDED", "good"),
        ("FAILED", "danger"),
        ("STARTED", "warning"),
        ("CANCELED", "warning"),
        ("SUPERSEDED", "warning"),
    ],
)
def test_slack_colour_follows_the_state(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    state: str,
    colour: str,
) -> None:
    notifier.lambda_handler(pipeline_event(state), lambda_context)
    assert webhook.requests[0].json()["attachments"][0]["color"] == colour


def test_given_stage_event_then_message_names_the_stage(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    result = notifier.lambda_handler(stage_event("FAILED"), lambda_context)

    assert body(result)["stage"] == "Deploy"
    [attachment] = webhook.requests[0].json()["attachments"]
    assert attachment["title"] == "web-app (Deploy): FAILED"
    assert attachment["color"] == "danger"
    assert field_values(attachment)["Stage"] == "Deploy"
    assert "Action" not in field_values(attachment)


def test_given_action_event_then_message_names_stage_and_action(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    result = notifier.lambda_handler(action_event("STARTED"), lambda_context)

    assert body(result)["action"] == "CreateChangeSet"
    [attachment] = webhook.requests[0].json()["attachments"]
    assert attachment["title"] == "web-app (Deploy / CreateChangeSet): STARTED"
    assert field_values(attachment)["Stage"] == "Deploy"
    assert field_values(attachment)["Action"] == "CreateChangeSet"


@pytest.mark.parametrize(("state", "colour"), [("ALARM", "danger"), ("OK", "good")])
def test_given_alarm_state_change_then_slack_names_alarm_state_reason_and_links_to_it(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    state: str,
    colour: str,
) -> None:
    """Alarms reach chat too: the path that stays when alert e-mail is what fails."""
    result = notifier.lambda_handler(
        alarm_event(state, previous="OK" if state == "ALARM" else "ALARM"), lambda_context
    )

    assert body(result) == {
        "delivered": True,
        "format": "slack",
        "alarm": "opskit-prod-undelivered-alerts",
        "state": state,
    }
    [attachment] = webhook.requests[0].json()["attachments"]
    assert attachment["title"] == f"Alarm opskit-prod-undelivered-alerts: {state}"
    assert (attachment["color"], attachment["footer"]) == (colour, "CloudWatch")
    assert attachment["title_link"] == (
        f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
        "#alarmsV2:alarm/opskit-prod-undelivered-alerts"
    )
    facts = field_values(attachment)
    assert facts["State"] == state and facts["Reason"].startswith("Threshold Crossed")
    assert facts["Description"] == "[WARNING] alert e-mails SNS could not deliver"


def test_given_alarm_details_of_the_wrong_type_then_they_are_left_out_and_the_alarm_is_posted(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    """Optional details never cost the notification itself."""
    event = alarm_event()
    event["detail"]["previousState"]["value"] = {"unexpected": "object"}
    event["detail"]["state"]["reason"] = 42
    event["detail"]["configuration"]["description"] = ["not", "text"]

    result = notifier.lambda_handler(event, lambda_context)

    assert body(result)["delivered"] is True
    [attachment] = webhook.requests[0].json()["attachments"]
    assert set(field_values(attachment)) == {"Alarm", "State", "Account / Region"}


def test_given_alarm_event_without_its_state_then_error_names_the_field(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    event = alarm_event()
    del event["detail"]["state"]
    with pytest.raises(MalformedEventError, match=r"'detail\.state\.value'"):
        notifier.lambda_handler(event, lambda_context)
    assert webhook.requests == []


# --- Teams ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "style", "colour"),
    [
        ("SUCCEEDED", "good", "Good"),
        ("FAILED", "attention", "Attention"),
        ("STOPPED", "warning", "Warning"),
    ],
)
def test_given_teams_format_then_an_adaptive_card_with_facts_and_link_is_posted(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    state: str,
    style: str,
    colour: str,
) -> None:
    monkeypatch.setenv("WEBHOOK_FORMAT", "teams")

    result = notifier.lambda_handler(action_event(state), lambda_context)

    assert body(result)["format"] == "teams"
    message = webhook.requests[0].json()
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    header, facts = card["body"]
    assert header["style"] == style
    title, when = header["items"]
    assert (title["text"], title["color"]) == (
        f"web-app (Deploy / CreateChangeSet): {state}",
        colour,
    )
    assert when["text"] == "2026-11-25 10:15:30 UTC"
    assert {f["title"]: f["value"] for f in facts["facts"]} == {
        "Pipeline": "web-app",
        "State": state,
        "Stage": "Deploy",
        "Action": "CreateChangeSet",
        "Execution": EXECUTION_ID,
        "Account / Region": f"{ACCOUNT} / {REGION}",
    }
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "View execution", "url": CONSOLE_URL}
    ]


# --- pure message building --------------------------------------------------------------


def test_console_link_url_quotes_the_pipeline_name(notifier: ModuleType) -> None:
    assert notifier.console_url("my app/v2", "e-1", "us-east-1") == (
        "https://us-east-1.console.aws.amazon.com/codesuite/codepipeline/pipelines/"
        "my%20app%2Fv2/executions/e-1/timeline?region=us-east-1"
    )


def test_event_time_with_offset_becomes_utc_epoch_seconds(notifier: ModuleType) -> None:
    event = pipeline_event()
    event["time"] = "2026-11-25T11:15:30+01:00"
    assert notifier.parse_event(event).epoch_seconds == EVENT_EPOCH


def test_slack_text_is_escaped(notifier: ModuleType) -> None:
    event = pipeline_event(stage="<b>&")
    payload = notifier.slack_payload(notifier.parse_event(event))
    assert payload["attachments"][0]["title"] == "web-app (&lt;b&gt;&amp;): SUCCEEDED"


# --- partitions: accepted regions and console links ---------------------------------------

BOTOCORE_PARTITIONS = create_loader().load_data("partitions")["partitions"]


def timeline(console: str, region: str) -> str:
    return (
        f"{console}/codesuite/codepipeline/pipelines/web-app/executions/{EXECUTION_ID}/timeline"
        f"?region={region}"
    )


def event_in(region: str) -> dict[str, Any]:
    event = pipeline_event()
    event["region"] = region
    return event


@pytest.mark.parametrize(
    ("region", "console"),
    [
        ("eu-west-1", "https://eu-west-1.console.aws.amazon.com"),
        ("cn-northwest-1", "https://console.amazonaws.cn"),
        ("us-gov-west-1", "https://console.amazonaws-us-gov.com"),
        ("eusc-de-east-1", "https://eusc-de-east-1.console.amazonaws-eusc.eu"),
    ],
    ids=["aws", "aws-cn", "aws-us-gov", "aws-eusc"],
)
def test_given_an_event_from_a_partition_then_the_link_opens_that_partitions_console(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    region: str,
    console: str,
) -> None:
    notifier.lambda_handler(event_in(region), lambda_context)
    monkeypatch.setenv("WEBHOOK_FORMAT", "teams")
    notifier.lambda_handler(event_in(region), lambda_context)

    slack, teams = (r.json() for r in webhook.requests)
    [attachment] = slack["attachments"]
    assert attachment["title_link"] == timeline(console, region)
    assert field_values(attachment)["Account / Region"] == f"{ACCOUNT} / {region}"
    [action] = teams["attachments"][0]["content"]["actions"]
    assert action["url"] == timeline(console, region)


@pytest.mark.parametrize("region", ["us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1"])
def test_given_an_event_from_a_partition_without_public_console_then_it_is_posted_without_link(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    region: str,
) -> None:
    notifier.lambda_handler(event_in(region), lambda_context)
    monkeypatch.setenv("WEBHOOK_FORMAT", "teams")
    notifier.lambda_handler(event_in(region), lambda_context)

    slack, teams = (r.json() for r in webhook.requests)
    [attachment] = slack["attachments"]
    assert "title_link" not in attachment
    assert attachment["fallback"] == "web-app: SUCCEEDED"
    assert "actions" not in teams["attachments"][0]["content"]
    assert "console" not in json.dumps([slack, teams])


def test_given_a_region_no_partition_claims_then_it_is_posted_as_botocore_would_place_it(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    all_output: Callable[[], str],
) -> None:
    """A region newer than this table still gets its message; botocore falls back to `aws`."""
    notifier.lambda_handler(event_in("xy-newplace-1"), lambda_context)

    [attachment] = webhook.requests[0].json()["attachments"]
    assert attachment["title_link"] == timeline(
        "https://xy-newplace-1.console.aws.amazon.com", "xy-newplace-1"
    )
    assert "region xy-newplace-1 matches no known partition" in all_output()


def test_every_region_botocore_knows_is_accepted(notifier: ModuleType) -> None:
    """The table of partitions itself is checked against botocore's with the common layer."""
    endpoints = create_loader().load_data("endpoints")["partitions"]
    listed = {r for p in [*BOTOCORE_PARTITIONS, *endpoints] for r in p["regions"]}
    for region in sorted(r for r in listed if not r.endswith("-global")):
        assert notifier.parse_event(event_in(region)).region == region


# --- retries and failures ---------------------------------------------------------------


def test_given_webhook_rate_limits_once_then_it_waits_retry_after_and_delivers(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext, sleeps: Sleeps
) -> None:
    webhook.script(Reply(429, b"rate_limited", {"Retry-After": "3"}))

    result = notifier.lambda_handler(pipeline_event(), lambda_context)

    assert body(result)["delivered"] is True
    assert len(webhook.requests) == 2
    assert sleeps == [3.0]


def test_given_webhook_down_then_handler_raises_and_breaker_then_fails_fast(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext, sleeps: Sleeps
) -> None:
    """Raising keeps the event: Lambda retries the async invocation, then the DLQ holds it."""
    webhook.default = Reply(500, b"")

    with pytest.raises(DeliveryError, match=r"failed after 3 attempt\(s\): HTTP 500"):
        notifier.lambda_handler(pipeline_event(), lambda_context)
    assert len(webhook.requests) == 3
    assert len(sleeps) == 2

    for _ in range(2):
        with pytest.raises(DeliveryError):
            notifier.lambda_handler(pipeline_event(), lambda_context)
    assert len(webhook.requests) == 9

    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive failed"):
        notifier.lambda_handler(pipeline_event(), lambda_context)
    assert len(webhook.requests) == 9, "an open circuit must not call the webhook"


def test_given_webhook_asks_to_wait_longer_than_the_cap_then_one_request_and_a_retryable_error(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext, sleeps: Sleeps
) -> None:
    """Lambda's async retry comes back minutes later; the sandbox must not keep posting."""
    webhook.default = Reply(429, b"rate_limited", {"Retry-After": "30"})

    with pytest.raises(DeliveryError, match="the server asked to wait 30s") as error:
        notifier.lambda_handler(pipeline_event(), lambda_context)

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert error.value.retryable


def test_given_too_little_time_left_for_the_wait_a_retry_needs_then_it_stops_at_once_retryable(
    notifier: ModuleType, webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """The function's remaining time, less a margin, bounds the delivery: a retry that
    could not finish before Lambda stops the function is left to Lambda's async retry."""
    webhook.default = Reply(503, b"busy", {"Retry-After": "2"})

    with pytest.raises(DeliveryError, match=r"no time left to wait 2\.0s") as error:
        notifier.lambda_handler(pipeline_event(), LambdaContext(remaining_seconds=2.9))

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert error.value.retryable


def test_given_time_left_for_the_wait_then_the_retry_is_made(
    notifier: ModuleType, webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.script(Reply(503, b"busy", {"Retry-After": "2"}))

    result = notifier.lambda_handler(pipeline_event(), LambdaContext(remaining_seconds=10))

    assert body(result)["delivered"] is True
    assert sleeps == [2.0]


def test_given_webhook_rejects_the_payload_then_handler_raises_without_rereading_the_secret(
    notifier: ModuleType,
    webhook: WebhookServer,
    new_webhook: WebhookServer,
    lambda_context: LambdaContext,
    secretsmanager: Any,
    secret_arn: str,
    sleeps: Sleeps,
) -> None:
    notifier.lambda_handler(pipeline_event("STARTED"), lambda_context)
    secretsmanager.put_secret_value(SecretId=secret_arn, SecretString=new_webhook.url)
    webhook.default = Reply(400, b"invalid_payload")

    with pytest.raises(DeliveryError, match="rejected with HTTP 400: invalid_payload; not retried"):
        notifier.lambda_handler(pipeline_event(), lambda_context)

    assert len(webhook.requests) == 2
    assert new_webhook.requests == [], "a 400 is about the payload, not the URL"
    assert sleeps == []


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_given_the_webhook_url_was_rotated_then_the_new_url_gets_exactly_one_delivery(
    notifier: ModuleType,
    webhook: WebhookServer,
    new_webhook: WebhookServer,
    lambda_context: LambdaContext,
    secretsmanager: Any,
    secret_arn: str,
    sleeps: Sleeps,
    status: int,
) -> None:
    # GIVEN a warm sandbox that cached the old URL
    notifier.lambda_handler(pipeline_event("STARTED"), lambda_context)
    # AND the secret now holds a new URL, while the old one is revoked
    secretsmanager.put_secret_value(SecretId=secret_arn, SecretString=new_webhook.url)
    webhook.default = Reply(status, b"invalid_token")

    # WHEN the next event arrives, within the cache TTL
    result = notifier.lambda_handler(pipeline_event("SUCCEEDED"), lambda_context)

    # THEN the old URL was tried once, the secret read again, and the new URL got the message
    assert body(result)["delivered"] is True
    assert len(webhook.requests) == 2
    assert [r.json()["attachments"][0]["color"] for r in new_webhook.requests] == ["good"]
    assert sleeps == []
    # AND later events go straight to the new URL
    notifier.lambda_handler(pipeline_event("FAILED"), lambda_context)
    assert (len(webhook.requests), len(new_webhook.requests)) == (2, 2)


def test_given_the_webhook_url_is_revoked_but_the_secret_unchanged_then_no_retry_and_a_clear_error(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    secret_arn: str,
    sleeps: Sleeps,
) -> None:
    webhook.default = Reply(404, b"no_service")

    with pytest.raises(DeliveryError) as error:
        notifier.lambda_handler(pipeline_event(), lambda_context)

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert str(error.value) == (
        "delivery to 127.0.0.1 rejected with HTTP 404: no_service; not retried; "
        f"secret {secret_arn} still holds the rejected URL: put the new webhook URL in it"
    )
    assert error.value.status == 404


def test_given_teams_workflow_answers_202_then_the_message_counts_as_delivered(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: Sleeps,
) -> None:
    """A Workflows webhook queues the message for its flow: 202 means queued, not shown."""
    monkeypatch.setenv("WEBHOOK_FORMAT", "teams")
    webhook.default = Reply(202, b"")

    result = notifier.lambda_handler(pipeline_event(), lambda_context)

    assert body(result)["delivered"] is True
    assert len(webhook.requests) == 1
    assert sleeps == []


# --- malformed events -------------------------------------------------------------------


def _without(event: dict[str, Any], path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = event
    for key in parents:
        target = target[key]
    del target[last]
    return event


@pytest.mark.parametrize(
    ("make_event", "removed", "named"),
    [
        (pipeline_event, "detail.pipeline", "detail.pipeline"),
        (pipeline_event, "detail.execution-id", "detail.execution-id"),
        (pipeline_event, "detail.state", "detail.state"),
        (pipeline_event, "detail", "detail.pipeline"),
        (pipeline_event, "time", "time"),
        (pipeline_event, "region", "region"),
        (pipeline_event, "account", "account"),
        (stage_event, "detail.stage", "detail.stage"),
        (action_event, "detail.stage", "detail.stage"),
        (action_event, "detail.action", "detail.action"),
    ],
)
def test_given_event_missing_a_required_field_then_error_names_it_and_nothing_is_posted(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    make_event: Callable[[], dict[str, Any]],
    removed: str,
    named: str,
) -> None:
    with pytest.raises(MalformedEventError) as error:
        notifier.lambda_handler(_without(make_event(), removed), lambda_context)

    assert str(error.value) == f"event is missing required field '{named}'"
    assert webhook.requests == []


@pytest.mark.parametrize(("event", "kind"), [([], "list"), ("hello", "str"), (None, "null")])
def test_given_event_that_is_not_an_object_then_error_says_so(
    notifier: ModuleType, lambda_context: LambdaContext, event: Any, kind: str
) -> None:
    with pytest.raises(MalformedEventError, match=f"event must be a JSON object, got {kind}"):
        notifier.lambda_handler(event, lambda_context)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(detail="text"), "event field 'detail' must be an object, got str"),
        (lambda e: e.update(time="last tuesday"), "event field 'time' is not an ISO 8601"),
        (lambda e: e["detail"].update(state=7), "event field 'detail.state' must be a string"),
        (lambda e: e.update(region="evil.example.com/"), "event field 'region' is not an AWS"),
        (lambda e: e.update(region="us-east-1\n"), "event field 'region' is not an AWS"),
        (lambda e: e.update(region="aws-global"), "event field 'region' is not an AWS"),
        (lambda e: e.update(region="us-east-\u0661"), "event field 'region' is not an AWS"),
        (
            lambda e: e.update({"detail-type": "EC2 Instance State-change Notification"}),
            "event has unsupported detail-type 'EC2 Instance State-change Notification'; "
            "expected one of: CodePipeline Pipeline Execution State Change,",
        ),
    ],
)
def test_given_event_with_a_malformed_field_then_error_says_which_and_why(
    notifier: ModuleType,
    lambda_context: LambdaContext,
    mutate: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    event = pipeline_event()
    mutate(event)
    with pytest.raises(MalformedEventError) as error:
        notifier.lambda_handler(event, lambda_context)
    assert str(error.value).startswith(message)


# --- the webhook secret -----------------------------------------------------------------


@pytest.mark.parametrize(
    "as_secret",
    [lambda url: url, lambda url: f"  {url}\n", lambda url: json.dumps({"url": url})],
    ids=["plain-url", "padded-url", "json-url"],
)
def test_given_secret_as_plain_url_or_json_then_notification_is_delivered(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    make_secret: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    as_secret: Callable[[str], str],
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", make_secret(as_secret(webhook.url)))

    notifier.lambda_handler(pipeline_event(), lambda_context)

    assert len(webhook.requests) == 1


def test_given_warm_sandbox_then_the_secret_is_not_read_again(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    secretsmanager: Any,
    secret_arn: str,
) -> None:
    notifier.lambda_handler(pipeline_event("STARTED"), lambda_context)
    secretsmanager.delete_secret(SecretId=secret_arn, ForceDeleteWithoutRecovery=True)

    notifier.lambda_handler(pipeline_event("SUCCEEDED"), lambda_context)

    assert [r.json()["attachments"][0]["color"] for r in webhook.requests] == ["warning", "good"]


@pytest.mark.parametrize(
    "value", ['{"webhook": "https://hooks.example.com/x"}', "not a url", '{"url": 42}', "[]"]
)
def test_given_secret_without_a_url_then_error_names_the_secret_but_not_its_value(
    notifier: ModuleType,
    lambda_context: LambdaContext,
    make_secret: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    arn = make_secret(value)
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", arn)

    with pytest.raises(ConfigurationError) as error:
        notifier.lambda_handler(pipeline_event(), lambda_context)

    assert str(error.value).startswith(f"secret {arn} does not hold a http(s) webhook URL")
    assert value not in str(error.value)


def test_given_no_secret_configured_then_error_names_the_variable(
    notifier: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET_ARN")
    with pytest.raises(ConfigurationError, match="environment variable WEBHOOK_SECRET_ARN"):
        notifier.lambda_handler(pipeline_event(), lambda_context)


def test_given_bad_webhook_format_then_error_names_the_value_and_the_choices(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_FORMAT", "discord")

    with pytest.raises(ConfigurationError) as error:
        notifier.lambda_handler(pipeline_event(), lambda_context)

    assert str(error.value) == (
        "environment variable WEBHOOK_FORMAT has invalid value 'discord'; "
        "valid choices: slack, teams"
    )
    assert webhook.requests == []


def test_the_webhook_url_never_appears_in_logs_or_errors(
    notifier: ModuleType,
    webhook: WebhookServer,
    lambda_context: LambdaContext,
    all_output: Callable[[], str],
) -> None:
    """Whoever holds a webhook URL can post to the channel: it is a secret."""
    errors: list[BaseException] = []
    notifier.lambda_handler(pipeline_event(), lambda_context)
    notifier.lambda_handler(SMOKE_TEST_EVENT, lambda_context)
    for reply, invocations in ((Reply(404, webhook.url.encode()), 1), (Reply(500), 4)):
        webhook.default = reply
        for _ in range(invocations):
            with pytest.raises(DeliveryError) as error:
                notifier.lambda_handler(pipeline_event("FAILED"), lambda_context)
            errors.append(error.value)
    assert isinstance(errors[-1], CircuitOpenError)

    output = all_output()
    assert "Notification delivered" in output, "log capture must see the function's logs"
    assert "deployment-notifier-test" in output, "service name comes from the construct's env"
    assert "Notification not delivered" in output
    for text in [output, *map(str, errors), *map(repr, errors)]:
        assert webhook.url not in text
        assert webhook.token not in text


# --- smoke test from the deployment's post-traffic hook -----------------------------------


def test_given_smoke_test_event_then_configuration_is_checked_and_nothing_is_posted(
    notifier: ModuleType, webhook: WebhookServer, lambda_context: LambdaContext
) -> None:
    result = notifier.lambda_handler(SMOKE_TEST_EVENT, lambda_context)

    assert body(result) == {"smokeTest": "passed", "format": "slack"}
    assert webhook.requests == []


def test_given_smoke_test_with_bad_format_then_it_fails_clearly(
    notifier: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_FORMAT", "pager")
    with pytest.raises(ConfigurationError, match="WEBHOOK_FORMAT has invalid value 'pager'"):
        notifier.lambda_handler(SMOKE_TEST_EVENT, lambda_context)


def test_given_smoke_test_with_unreadable_secret_then_it_fails_naming_the_secret(
    notifier: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:missing-AbCdEf"
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", arn)
    with pytest.raises(SecretError, match=f"cannot read secret {arn}: ResourceNotFoundException"):
        notifier.lambda_handler(SMOKE_TEST_EVENT, lambda_context)


def test_given_smoke_test_with_secret_that_is_not_a_url_then_it_fails(
    notifier: ModuleType,
    lambda_context: LambdaContext,
    make_secret: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", make_secret('{"url": "ftp://files.example.com"}'))
    with pytest.raises(ConfigurationError, match="does not hold a http"):
        notifier.lambda_handler(SMOKE_TEST_EVENT, lambda_context)


def test_only_the_exact_smoke_test_marker_skips_delivery(notifier: ModuleType) -> None:
    assert notifier.is_smoke_test({"opskit": {"smokeTest": True}})
    assert not notifier.is_smoke_test({"opskit": {"smokeTest": "true"}})
    assert not notifier.is_smoke_test({**pipeline_event(), "opskit": "x"})
