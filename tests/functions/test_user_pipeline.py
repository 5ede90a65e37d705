"""Specification of the user-service event pipeline: user_created.py and email_sender.py.

Both handlers run for real against moto's ThreadedMotoServer over HTTP (SNS, SQS, DynamoDB,
SES v2). Lambda does not run here, so the tests play its part: the SNS envelope Lambda would
pass to user_created is captured from a real topic through an SQS subscription with the filter
policy the construct uses; the e-mail sender's batch is received from the real e-mail queue,
and the messages it does not report as failed are deleted, as the event source mapping does.
Sent e-mails are read from moto's SES backend (the server runs in this process).

Crashes and SES throttling are injected with botocore event hooks on real clients: a hook
raises before a call leaves (a crash), or answers it with SES's own HTTP 429 error (throttling)
which botocore then parses as it would AWS's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from opskit_common import clients
from opskit_common.config import ConfigurationError
from opskit_common.events import MalformedEventError

from tests.functions.conftest import FUNCTIONS, REGION, LambdaContext

NOW = datetime(2026, 11, 25, 10, 15, 30, 250000, tzinfo=UTC)
NINETY_DAYS = 90 * 24 * 3600
SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}


def load_module(name: str) -> ModuleType:
    """Imports `opskit/functions/user_service/<name>.py` fresh (a cold start)."""
    path = FUNCTIONS / "user_service" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"opskit_function_user_service_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Clock:
    """The processor's clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SimulatedCrash(Exception):
    """Stands for the sandbox dying at this point of the invocation."""


def crash_before(aws_client: Any, operation: str) -> None:
    """Makes the next `operation` call of `aws_client` die before it leaves, once."""
    event = f"before-call.{aws_client.meta.service_model.service_id.hyphenize()}.{operation}"

    def crash(**_: Any) -> None:
        aws_client.meta.events.unregister(event, crash)
        raise SimulatedCrash(operation)

    aws_client.meta.events.register(event, crash)


@dataclass(frozen=True)
class Infrastructure:
    """What the module's tests share: the topic with its filtered capture subscription, the
    audit table and the verified sender. Tests tell their own items apart (see Pipeline)."""

    sns: Any
    sqs: Any
    dynamodb: Any
    topic_arn: str
    capture_url: str
    table: str
    from_email: str


@dataclass
class Pipeline:
    """One test's view: its own e-mail queue, and the audit items and e-mails it caused."""

    infrastructure: Infrastructure
    email_queue_url: str
    emails_before: int
    message_ids: list[str] = field(default_factory=list)

    @property
    def sns(self) -> Any:
        return self.infrastructure.sns

    @property
    def sqs(self) -> Any:
        return self.infrastructure.sqs

    @property
    def dynamodb(self) -> Any:
        return self.infrastructure.dynamodb

    @property
    def topic_arn(self) -> str:
        return self.infrastructure.topic_arn

    @property
    def capture_url(self) -> str:
        return self.infrastructure.capture_url

    @property
    def table(self) -> str:
        return self.infrastructure.table

    @property
    def from_email(self) -> str:
        return self.infrastructure.from_email

    @property
    def email_queue_arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{DEFAULT_ACCOUNT_ID}:{self.email_queue_url.rsplit('/', 1)[1]}"

    def publish(self, message: dict[str, Any], *, event_type: str = "user_created") -> None:
        self.sns.publish(
            TopicArn=self.topic_arn,
            Message=json.dumps(message),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": event_type}},
        )

    def captured_envelopes(self) -> list[dict[str, Any]]:
        """The SNS envelopes delivered through the filtered subscription (and removed)."""
        envelopes = [json.loads(message["Body"]) for message in self._drain(self.capture_url)]
        self.message_ids.extend(envelope["MessageId"] for envelope in envelopes)
        return envelopes

    def publish_user_created(self, user: dict[str, str]) -> dict[str, Any]:
        """Publishes the API's event and returns the Lambda event SNS would invoke with."""
        self.publish({"event_type": "user_created", "user": user})
        [envelope] = self.captured_envelopes()
        return sns_event(envelope)

    def receive_batch(self, *, visibility_timeout: int = 30) -> dict[str, Any]:
        """Up to 10 messages of the e-mail queue as Lambda's SQS event."""
        messages = self.sqs.receive_message(
            QueueUrl=self.email_queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility_timeout,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.email_queue_arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }

    def acknowledge(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        """What the event source mapping does with a partial batch response."""
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(
                    QueueUrl=self.email_queue_url, ReceiptHandle=record["receiptHandle"]
                )

    def queued_bodies(self) -> list[dict[str, Any]]:
        """Every message on the e-mail queue, parsed, left on the queue."""
        messages = self.sqs.receive_message(
            QueueUrl=self.email_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]

    def audit_items(self) -> list[dict[str, Any]]:
        """The audit items of every SNS message this test captured, attribute values unwrapped."""
        if not self.message_ids:
            return []
        keys = [{"audit_id": {"S": f"user_created:{mid}"}} for mid in self.message_ids]
        response = self.dynamodb.batch_get_item(
            RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
        )
        assert not response.get("UnprocessedKeys")
        return [
            {k: next(iter(v.values())) for k, v in item.items()}
            for item in response["Responses"][self.table]
        ]

    def table_size(self) -> int:
        return len(scan(self.dynamodb, self.table))

    def sent_emails(self) -> list[Any]:
        """The e-mails SES accepted since the test began."""
        return ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages[self.emails_before :]

    def _drain(self, url: str) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        for message in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return messages


def sns_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """Lambda's event for one SNS delivery: the envelope under `Sns`."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{envelope['TopicArn']}:{uuid.uuid4()}",
                "Sns": envelope,
            }
        ]
    }


def user(**overrides: str) -> dict[str, str]:
    return {
        "user_id": "0f7d3c2a-6b1e-4c8d-9a5f-2e4b6d8f0a1c",
        "email": "ada@example.org",
        "name": "Ada Lovelace",
        "created_at": "2026-11-25T10:15:29.000Z",
        "updated_at": "2026-11-25T10:15:29.000Z",
        **overrides,
    }


def scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [item for page in pages for item in page["Items"]]


@pytest.fixture(scope="module")
def infrastructure(moto_endpoint: str) -> Infrastructure:
    options = {
        "region_name": REGION,
        "endpoint_url": moto_endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    sns = boto3.client("sns", **options)
    sqs = boto3.client("sqs", **options)
    dynamodb = boto3.client("dynamodb", **options)
    suffix = uuid.uuid4().hex[:10]

    topic_arn = sns.create_topic(Name=f"user-created-{suffix}")["TopicArn"]
    capture_url = sqs.create_queue(QueueName=f"capture-{suffix}")["QueueUrl"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:{REGION}:{DEFAULT_ACCOUNT_ID}:capture-{suffix}",
        Attributes={"FilterPolicy": json.dumps({"event_type": ["user_created"]})},
    )
    table = f"audit-{suffix}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "audit_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "audit_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    from_email = f"no-reply-{suffix}@example.com"
    boto3.client("sesv2", **options).create_email_identity(EmailIdentity=from_email)
    return Infrastructure(sns, sqs, dynamodb, topic_arn, capture_url, table, from_email)


@pytest.fixture
def pipeline(
    infrastructure: Infrastructure, aws_environment: str, monkeypatch: pytest.MonkeyPatch
) -> Pipeline:
    email_queue_url = infrastructure.sqs.create_queue(QueueName=f"email-{uuid.uuid4().hex}")[
        "QueueUrl"
    ]
    monkeypatch.setenv("AUDIT_TABLE", infrastructure.table)
    monkeypatch.setenv("EMAIL_QUEUE", email_queue_url)
    monkeypatch.setenv("FROM_EMAIL", infrastructure.from_email)
    monkeypatch.delenv("CONFIGURATION_SET", raising=False)
    return Pipeline(
        infrastructure=infrastructure,
        email_queue_url=email_queue_url,
        emails_before=len(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def processor(pipeline: Pipeline, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_module("user_created")
    monkeypatch.setattr(module, "clock", clock)
    return module


@pytest.fixture
def sender() -> ModuleType:
    return load_module("email_sender")


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


def results(response: dict[str, Any]) -> list[str]:
    return [r["result"] for r in json.loads(response["body"])["results"]]


# --- the whole path ---------------------------------------------------------------------


def test_given_a_user_created_when_the_pipeline_runs_then_one_welcome_is_sent_and_audited(
    pipeline: Pipeline, processor: ModuleType, sender: ModuleType, context: LambdaContext
) -> None:
    # GIVEN the API's event, delivered by SNS through the filter policy
    event = pipeline.publish_user_created(user())

    # WHEN the processor handles it
    response = processor.lambda_handler(event, context)

    # THEN the welcome message is on the e-mail queue, exactly as the contract says
    assert results(response) == ["queued"]
    assert pipeline.queued_bodies() == [
        {
            "template": "welcome",
            "to": "ada@example.org",
            "name": "Ada Lovelace",
            "user_id": "0f7d3c2a-6b1e-4c8d-9a5f-2e4b6d8f0a1c",
        }
    ]

    # WHEN the sender gets the queue's batch
    batch = pipeline.receive_batch()
    answer = sender.lambda_handler(batch, context)
    pipeline.acknowledge(batch, answer)

    # THEN SES sent one e-mail from FROM_EMAIL to the new user, and the queue is empty
    assert answer == {"batchItemFailures": []}
    [email] = pipeline.sent_emails()
    assert email.destinations == {"ToAddresses": ["ada@example.org"]}
    assert email.subject == "Welcome, Ada Lovelace"
    assert "Hello Ada Lovelace," in email.body
    assert "<code>0f7d3c2a-6b1e-4c8d-9a5f-2e4b6d8f0a1c</code>" in email.body
    assert pipeline.queued_bodies() == []


def test_the_audit_record_names_the_action_and_user_and_expires_after_90_days(
    pipeline: Pipeline, processor: ModuleType, context: LambdaContext
) -> None:
    event = pipeline.publish_user_created(user())
    message_id = event["Records"][0]["Sns"]["MessageId"]

    processor.lambda_handler(event, context)

    [item] = pipeline.audit_items()
    assert item["audit_id"] == f"user_created:{message_id}"
    assert item["action"] == "user_created"
    assert item["user_id"] == "0f7d3c2a-6b1e-4c8d-9a5f-2e4b6d8f0a1c"
    assert item["timestamp"] == "2026-11-25T10:15:30.250Z"
    assert int(item["ttl"]) == int(NOW.timestamp()) + NINETY_DAYS
    assert item["welcome"] == "queued"
    [queued] = pipeline.receive_batch()["Records"]
    assert item["welcome_message_id"] == queued["messageId"]
    assert queued["messageAttributes"]["audit_id"]["StringValue"] == item["audit_id"]
    assert "lease_expires_at" not in item
    assert "email" not in item  # the audit log keeps no personal data beyond the user id


def test_the_filter_policy_keeps_other_event_types_away_and_the_processor_refuses_them(
    pipeline: Pipeline, processor: ModuleType, context: LambdaContext
) -> None:
    # GIVEN an event of another type on the same topic
    pipeline.publish({"event_type": "user_deleted", "user": user()}, event_type="user_deleted")

    # THEN the subscription's filter policy does not deliver it
    assert pipeline.captured_envelopes() == []

    # AND WHEN one arrives anyway (a subscription without the filter), it is refused untouched
    pipeline.publish({"event_type": "user_created", "user": user()})
    [envelope] = pipeline.captured_envelopes()
    envelope["MessageAttributes"]["event_type"]["Value"] = "user_deleted"
    with pytest.raises(MalformedEventError, match="event_type='user_deleted'"):
        processor.lambda_handler(sns_event(envelope), context)
    assert pipeline.audit_items() == []
    assert pipeline.queued_bodies() == []


# --- redelivery and crashes ---------------------------------------------------------------


def test_given_the_same_sns_message_delivered_twice_then_nothing_is_duplicated(
    pipeline: Pipeline,
    processor: ModuleType,
    sender: ModuleType,
    clock: Clock,
    context: LambdaContext,
) -> None:
    event = pipeline.publish_user_created(user())
    first = processor.lambda_handler(event, context)

    # WHEN SNS delivers it again, an hour later
    clock.advance(3600)
    second = processor.lambda_handler(event, context)

    # THEN the second delivery changes nothing, and one e-mail goes out
    assert (results(first), results(second)) == (["queued"], ["duplicate"])
    assert len(pipeline.audit_items()) == 1
    assert pipeline.audit_items()[0]["timestamp"] == "2026-11-25T10:15:30.250Z"
    batch = pipeline.receive_batch()
    assert len(batch["Records"]) == 1
    pipeline.acknowledge(batch, sender.lambda_handler(batch, context))
    assert len(pipeline.sent_emails()) == 1


def test_given_a_crash_between_the_audit_write_and_the_send_then_the_retry_sends_once(
    pipeline: Pipeline, processor: ModuleType, clock: Clock, context: LambdaContext
) -> None:
    event = pipeline.publish_user_created(user())

    # GIVEN an invocation that dies after writing the audit item, before SendMessage
    crash_before(clients.client("sqs"), "SendMessage")
    with pytest.raises(SimulatedCrash):
        processor.lambda_handler(event, context)
    [item] = pipeline.audit_items()
    assert item["welcome"] == "pending"
    assert pipeline.queued_bodies() == []

    # WHEN the event is retried while the dead invocation's lease still runs
    # THEN the retry backs off (another invocation might still be sending)
    with pytest.raises(processor.WelcomeInProgressError, match="another invocation"):
        processor.lambda_handler(event, context)
    assert pipeline.queued_bodies() == []

    # WHEN Lambda's async retry comes back a minute later, after the lease
    clock.advance(60)
    response = processor.lambda_handler(event, context)

    # THEN the welcome is queued once, and the audit record is the first one, completed
    assert results(response) == ["resumed"]
    assert [body["to"] for body in pipeline.queued_bodies()] == ["ada@example.org"]
    [item] = pipeline.audit_items()
    assert item["welcome"] == "queued"
    assert item["timestamp"] == "2026-11-25T10:15:30.250Z"
    assert "lease_expires_at" not in item

    # AND any later redelivery is a duplicate
    assert results(processor.lambda_handler(event, context)) == ["duplicate"]
    assert len(pipeline.queued_bodies()) == 1


def test_the_lease_lasts_as_long_as_the_invocation_could_run(
    pipeline: Pipeline, processor: ModuleType, clock: Clock, context: LambdaContext
) -> None:
    event = pipeline.publish_user_created(user())
    crash_before(clients.client("sqs"), "SendMessage")
    with pytest.raises(SimulatedCrash):
        processor.lambda_handler(event, context)

    [item] = pipeline.audit_items()
    remaining = context.get_remaining_time_in_millis() / 1000
    assert int(item["lease_expires_at"]) == int(NOW.timestamp()) + math.ceil(
        remaining + processor.LEASE_MARGIN_SECONDS
    )


def test_given_a_crash_after_the_send_before_marking_it_then_the_welcome_is_sent_again(
    pipeline: Pipeline, processor: ModuleType, clock: Clock, context: LambdaContext
) -> None:
    """The one window the module docstring owns up to: at least once, never lost."""
    event = pipeline.publish_user_created(user())
    dynamodb = clients.client("dynamodb")
    dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        _crash_on_marking_queued,
        unique_id="crash-mark",
    )
    try:
        with pytest.raises(SimulatedCrash):
            processor.lambda_handler(event, context)
    finally:
        dynamodb.meta.events.unregister(
            "before-parameter-build.dynamodb.UpdateItem", unique_id="crash-mark"
        )
    assert len(pipeline.queued_bodies()) == 1

    clock.advance(60)
    assert results(processor.lambda_handler(event, context)) == ["resumed"]

    assert len(pipeline.queued_bodies()) == 2
    assert [item["welcome"] for item in pipeline.audit_items()] == ["queued"]


def test_given_two_retries_taking_over_an_expired_lease_at_once_then_the_later_backs_off(
    pipeline: Pipeline,
    processor: ModuleType,
    clock: Clock,
    context: LambdaContext,
    aws_environment: str,
) -> None:
    event = pipeline.publish_user_created(user())
    crash_before(clients.client("sqs"), "SendMessage")
    with pytest.raises(SimulatedCrash):
        processor.lambda_handler(event, context)
    clock.advance(60)

    # GIVEN another retry that takes over the expired lease between this one's read and write
    rival = boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_environment)

    def rival_takes_over_first(params: dict[str, Any], **_: Any) -> None:
        seen = params.get("ExpressionAttributeValues", {}).get(":seen")
        if seen is not None:
            rival.update_item(
                TableName=pipeline.table,
                Key=params["Key"],
                UpdateExpression="SET lease_expires_at = :new",
                ExpressionAttributeValues={":new": {"N": str(int(seen["N"]) + 3600)}},
            )

    dynamodb = clients.client("dynamodb")
    dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem", rival_takes_over_first, unique_id="rival"
    )
    try:
        # WHEN this retry tries to take the lease
        # THEN it backs off and queues nothing: the rival holds the lease now
        with pytest.raises(processor.WelcomeInProgressError, match="at the same moment"):
            processor.lambda_handler(event, context)
    finally:
        dynamodb.meta.events.unregister(
            "before-parameter-build.dynamodb.UpdateItem", unique_id="rival"
        )
    assert pipeline.queued_bodies() == []
    [item] = pipeline.audit_items()
    assert item["welcome"] == "pending"


def _crash_on_marking_queued(params: dict[str, Any], **_: Any) -> None:
    if ":queued" in params.get("ExpressionAttributeValues", {}):
        raise SimulatedCrash("UpdateItem")


@pytest.fixture
def slow_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto takes 50 ms to evaluate a condition, so concurrent writes overlap inside it."""
    import moto.dynamodb.models.table as moto_table

    evaluate = moto_table.get_filter_expression

    def slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(moto_table, "get_filter_expression", slowly)


@pytest.mark.usefixtures("slow_conditions")
def test_given_two_concurrent_deliveries_then_exactly_one_sends(
    pipeline: Pipeline, processor: ModuleType, aws_environment: str
) -> None:
    event = processor.parse_record(pipeline.publish_user_created(user())["Records"][0])
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        options = {"region_name": REGION, "endpoint_url": aws_environment}
        dynamodb, sqs = boto3.client("dynamodb", **options), boto3.client("sqs", **options)
        start.wait()
        try:
            outcome = processor.process(
                event,
                dynamodb=dynamodb,
                sqs=sqs,
                table=pipeline.table,
                queue_url=pipeline.email_queue_url,
                now=NOW,
            )
            outcomes.append(outcome.result)
        except processor.WelcomeInProgressError:
            outcomes.append("in progress")

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) in (["duplicate", "queued"], ["in progress", "queued"])
    assert len(pipeline.queued_bodies()) == 1
    assert len(pipeline.audit_items()) == 1


def test_given_the_queue_unreachable_then_the_processor_raises_so_the_event_reaches_the_dlq(
    pipeline: Pipeline,
    processor: ModuleType,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = pipeline.publish_user_created(user())
    monkeypatch.setenv("EMAIL_QUEUE", pipeline.email_queue_url + "-missing")

    with pytest.raises(ClientError) as raised:
        processor.lambda_handler(event, context)

    assert raised.value.response["Error"]["Code"] in (
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    )
    assert [item["welcome"] for item in pipeline.audit_items()] == ["pending"]


# --- malformed events and configuration -------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "is not JSON"),
        ('["user_created"]', "must be a JSON object"),
        ('{"event_type": "user_updated", "user": {}}', "event_type 'user_updated'"),
        ('{"event_type": "user_created"}', "missing required field 'user.user_id'"),
        (
            json.dumps({"event_type": "user_created", "user": {**user(), "email": ""}}),
            "'user.email' must not be empty",
        ),
        (
            json.dumps({"event_type": "user_created", "user": {**user(), "name": 42}}),
            "'user.name' must be a string",
        ),
    ],
)
def test_given_a_malformed_message_then_the_error_names_the_problem_and_nothing_is_written(
    pipeline: Pipeline, processor: ModuleType, context: LambdaContext, message: str, error: str
) -> None:
    pipeline.publish({"event_type": "user_created", "user": user()})
    [envelope] = pipeline.captured_envelopes()
    envelope["Message"] = message

    with pytest.raises(MalformedEventError, match=error) as raised:
        processor.lambda_handler(sns_event(envelope), context)

    assert envelope["MessageId"] in str(raised.value)
    assert pipeline.audit_items() == []
    assert pipeline.queued_bodies() == []


def test_given_an_event_without_records_then_it_is_refused(
    pipeline: Pipeline, processor: ModuleType, context: LambdaContext
) -> None:
    with pytest.raises(MalformedEventError, match="'Records'"):
        processor.lambda_handler({"Records": []}, context)


@pytest.mark.parametrize(
    "record", [None, 42, "record", ["record"]], ids=["null", "int", "str", "list"]
)
def test_given_a_record_that_is_not_an_object_then_the_error_names_the_record(
    pipeline: Pipeline, processor: ModuleType, context: LambdaContext, record: Any
) -> None:
    with pytest.raises(MalformedEventError, match=r"'Records\[0\]' must be an SNS record"):
        processor.lambda_handler({"Records": [record]}, context)

    assert pipeline.audit_items() == []


def test_given_email_queue_that_is_not_a_url_then_the_error_names_the_variable(
    pipeline: Pipeline,
    processor: ModuleType,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_QUEUE", "email-queue")
    with pytest.raises(ConfigurationError, match="EMAIL_QUEUE must be a queue URL"):
        processor.lambda_handler(SMOKE_TEST_EVENT, context)


def test_smoke_tests_check_configuration_and_touch_nothing(
    pipeline: Pipeline,
    processor: ModuleType,
    sender: ModuleType,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items_before = pipeline.table_size()

    assert processor.lambda_handler(SMOKE_TEST_EVENT, context)["statusCode"] == 200
    assert sender.lambda_handler(SMOKE_TEST_EVENT, context)["statusCode"] == 200

    assert pipeline.table_size() == items_before
    assert pipeline.queued_bodies() == []
    assert pipeline.sent_emails() == []

    monkeypatch.delenv("AUDIT_TABLE")
    monkeypatch.delenv("FROM_EMAIL")
    with pytest.raises(ConfigurationError, match="AUDIT_TABLE"):
        processor.lambda_handler(SMOKE_TEST_EVENT, context)
    with pytest.raises(ConfigurationError, match="FROM_EMAIL"):
        sender.lambda_handler(SMOKE_TEST_EVENT, context)


# --- the e-mail sender ---------------------------------------------------------------------


def welcome(**overrides: Any) -> str:
    body = {"template": "welcome", "to": "grace@example.org", "name": "Grace", "user_id": "u-2"}
    body.update(overrides)
    return json.dumps(body)


def enqueue(pipeline: Pipeline, *bodies: str) -> dict[str, Any]:
    """Sends the bodies to the e-mail queue and receives them as one Lambda batch."""
    for body in bodies:
        pipeline.sqs.send_message(QueueUrl=pipeline.email_queue_url, MessageBody=body)
    batch = pipeline.receive_batch()
    assert len(batch["Records"]) == len(bodies)
    return batch


def record_id(batch: dict[str, Any], body: str) -> str:
    [found] = [r["messageId"] for r in batch["Records"] if r["body"] == body]
    return found


def test_given_one_bad_and_one_good_message_then_only_the_bad_one_returns_to_the_queue(
    pipeline: Pipeline, sender: ModuleType, context: LambdaContext
) -> None:
    bad, good = "{not json", welcome()
    batch = enqueue(pipeline, bad, good)

    answer = sender.lambda_handler(batch, context)
    pipeline.acknowledge(batch, answer)

    assert answer == {"batchItemFailures": [{"itemIdentifier": record_id(batch, bad)}]}
    assert [e.destinations["ToAddresses"] for e in pipeline.sent_emails()] == [
        ["grace@example.org"]
    ]
    # WHEN the failed message's visibility timeout runs out, it alone is received again
    [failed] = [r for r in batch["Records"] if r["body"] == bad]
    pipeline.sqs.change_message_visibility(
        QueueUrl=pipeline.email_queue_url,
        ReceiptHandle=failed["receiptHandle"],
        VisibilityTimeout=0,
    )
    assert [r["body"] for r in pipeline.receive_batch()["Records"]] == [bad]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        ('"welcome"', "must be a JSON object"),
        (welcome(template="farewell"), "unknown template 'farewell'; valid choices: welcome"),
        (welcome(template=None), "missing required field 'template'"),
        (welcome(name=None), "missing required field 'name'"),
        (welcome(user_id=7), "'user_id' must be a string, got int"),
        (welcome(name="  "), "'name' must not be empty"),
        (welcome(name="x" * 1001), "'name' is longer than 1000"),
        (welcome(to="grace"), "'to' is not a single e-mail address"),
        (welcome(to="a@example.org, b@example.org"), "'to' is not a single e-mail address"),
        (welcome(to="Grace <grace@example.org>"), "'to' is not a single e-mail address"),
    ],
)
def test_a_malformed_message_is_refused_with_the_reason(
    sender: ModuleType, body: str, reason: str
) -> None:
    """Each of these fails just its own record (see the partial-batch test above)."""
    with pytest.raises(MalformedEventError) as raised:
        sender.parse_message(body)
    assert reason in str(raised.value)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_given_ses_throttles_one_send_then_that_record_fails_and_the_others_are_sent(
    pipeline: Pipeline, sender: ModuleType, aws_environment: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Throttling is logged as a warning: the redrive retries it, nobody needs paging."""
    throttled = welcome(to="throttled@example.org")
    batch = enqueue(pipeline, welcome(), throttled, welcome(to="third@example.org"))
    ses = boto3.client(
        "sesv2",
        region_name=REGION,
        endpoint_url=aws_environment,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )

    def answer_429(request: Any, **_: Any) -> AWSResponse | None:
        if b"throttled@example.org" not in request.body:
            return None
        return AWSResponse(
            request.url,
            429,
            {"x-amzn-ErrorType": "TooManyRequestsException", "Content-Type": "application/json"},
            _Raw(b'{"message": "Maximum sending rate exceeded."}'),
        )

    ses.meta.events.register("before-send.sesv2.SendEmail", answer_429)

    result = sender.process_batch(batch["Records"], ses=ses, from_email=pipeline.from_email)

    [(failed_id, why)] = result.failed
    assert failed_id == record_id(batch, throttled)
    assert why == "SES refused the welcome e-mail: TooManyRequestsException"
    assert not_sent_levels(caplog) == ["WARNING"]
    assert sorted(e.destinations["ToAddresses"][0] for e in pipeline.sent_emails()) == [
        "grace@example.org",
        "third@example.org",
    ]


def test_given_ses_rejects_the_sender_then_every_record_fails_and_the_batch_raises(
    pipeline: Pipeline,
    sender: ModuleType,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FROM_EMAIL", "unverified@example.net")
    batch = enqueue(pipeline, welcome(), welcome(to="b@example.org"))

    with pytest.raises(sender.BatchFailedError, match=r"all 2 records failed.*MessageRejected"):
        sender.lambda_handler(batch, context)
    assert not_sent_levels(caplog) == ["ERROR", "ERROR"]


def not_sent_levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.levelname for r in caplog.records if r.getMessage() == "E-mail not sent"]


def test_the_welcome_is_escaped_in_html_and_the_subject_stays_one_line(
    sender: ModuleType,
) -> None:
    email = sender.parse_message(
        welcome(name='<script>alert("x")</script> & Co\r\nBcc: victim@example.org')
    )

    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in email.html
    assert '<script>alert("x")</script> & Co' in email.text
    assert "\r" not in email.subject and "\n" not in email.subject
    assert email.subject.startswith("Welcome, <script>")


def test_records_left_when_the_deadline_nears_are_returned_unsent(
    pipeline: Pipeline, sender: ModuleType
) -> None:
    batch = enqueue(pipeline, welcome(to="first@example.org"), welcome(to="second@example.org"))
    checks = iter([False, True])

    result = sender.process_batch(
        batch["Records"],
        ses=clients.client("sesv2"),
        from_email=pipeline.from_email,
        expired=lambda: next(checks),
    )

    assert len(result.sent) == 1
    [(_, why)] = result.failed
    assert "deadline" in why
    assert len(pipeline.sent_emails()) == 1


def test_the_handler_stops_before_its_timeout(
    pipeline: Pipeline, sender: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = enqueue(pipeline, welcome())

    almost_out_of_time = LambdaContext(remaining_seconds=sender.DEADLINE_MARGIN_SECONDS - 0.001)

    with pytest.raises(sender.BatchFailedError, match="deadline"):
        sender.lambda_handler(batch, almost_out_of_time)
    assert pipeline.sent_emails() == []


def test_given_a_configuration_set_then_the_send_names_it(
    pipeline: Pipeline, sender: ModuleType
) -> None:
    requests: list[dict[str, Any]] = []
    ses = clients.client("sesv2")
    ses.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )
    email = sender.parse_message(welcome())

    sender.send(email, ses=ses, from_email=pipeline.from_email, configuration_set="welcome-events")

    [request] = requests
    assert request["ConfigurationSetName"] == "welcome-events"
    assert request["EmailTags"] == [{"Name": "template", "Value": "welcome"}]
    assert request["Content"]["Simple"]["Body"]["Text"]["Data"] == email.text


@pytest.mark.parametrize(
    "event",
    [{"Records": "nope"}, {}, {"Records": [{"body": welcome()}]}],
    ids=["records-not-a-list", "no-records", "record-without-message-id"],
)
def test_given_an_event_that_is_not_an_sqs_batch_then_it_is_refused_whole(
    pipeline: Pipeline, sender: ModuleType, context: LambdaContext, event: dict[str, Any]
) -> None:
    with pytest.raises(MalformedEventError, match=r"Records|messageId"):
        sender.lambda_handler(event, context)
    assert pipeline.sent_emails() == []


def test_an_empty_batch_reports_no_failures(
    pipeline: Pipeline, sender: ModuleType, context: LambdaContext
) -> None:
    assert sender.lambda_handler({"Records": []}, context) == {"batchItemFailures": []}
