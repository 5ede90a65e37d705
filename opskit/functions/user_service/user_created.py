"""User-created processor: queues the welcome e-mail and writes the audit record.

Subscribed to the user-created SNS topic with the filter policy
``{"event_type": ["user_created"]}`` and invoked asynchronously, so a failure raises: Lambda
retries the event and finally puts it in the function's dead-letter queue.

Environment:
    AUDIT_TABLE  audit table name (key ``audit_id``, TTL attribute ``ttl``)
    EMAIL_QUEUE  URL of the (standard) e-mail queue the sender consumes

Redelivery. SNS delivers at least once and Lambda retries failed async events, so one SNS
message can arrive several times, even twice at once. Everything is keyed by its MessageId:
the audit item ``user_created:<MessageId>`` is written first, conditionally, and is also the
idempotency record of the welcome message:

1. put the audit item, ``welcome=pending`` with a lease as long as this invocation can run,
   unless it exists;
2. send the welcome message to the e-mail queue;
3. mark the item ``welcome=queued``.

A redelivery that finds ``queued`` does nothing. One that finds ``pending`` under a running
lease raises :class:`WelcomeInProgressError` (another invocation is at it; the async retry
comes back after it has finished). One that finds ``pending`` with an expired lease, because an
earlier attempt crashed between 1 and 3, claims the lease and sends: the welcome is never lost.
It is sent twice only if an attempt dies after SQS accepted it and before the one UpdateItem of
step 3; exactly once across DynamoDB and a standard queue is not to be had. For the leases to
have expired when Lambda retries (1 and 2 minutes later), the function timeout must stay under
a minute.

Why not the alternatives:
- the audit item written first with no state: a crash between the two writes leaves an audit
  item, and every redelivery then skips the send, so the welcome is silently lost;
- a FIFO queue with MessageDeduplicationId: deduplicates for 5 minutes only (a DLQ redrive an
  hour later duplicates), and Lambda allows no batching window on FIFO event sources, which
  the e-mail sender's 5-second window needs;
- Powertools idempotency: the same lease-then-complete scheme, with the same window after the
  send, but a table (or mixed items) of its own and a heavier cold start.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import Logger
from botocore.exceptions import ClientError
from opskit_common.clients import client
from opskit_common.config import ConfigurationError, require_env
from opskit_common.events import (
    MalformedEventError,
    is_smoke_test,
    optional,
    require,
    require_str,
    type_name,
)
from opskit_common.startup import imports_done

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "user-created")

EVENT_TYPE = "user_created"
ACTION = "user_created"
WELCOME_TEMPLATE = "welcome"
AUDIT_RETENTION = timedelta(days=90)
PENDING = "pending"
QUEUED = "queued"
DEFAULT_LEASE_SECONDS = 60.0
"""Lease when the invocation's remaining time is unknown (a local run)."""
LEASE_MARGIN_SECONDS = 5.0
"""Added to the remaining time, so a lease outlives the invocation that holds it."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _utc_now  # replaced in tests


class WelcomeInProgressError(RuntimeError):
    """Another invocation holds the lease on this message; the async retry will find it done."""


@dataclass(frozen=True)
class UserCreated:
    """One user-created notification, as delivered by SNS."""

    message_id: str
    user_id: str
    email: str
    name: str

    @property
    def audit_id(self) -> str:
        return f"{ACTION}:{self.message_id}"

    def welcome_message(self) -> dict[str, str]:
        return {
            "template": WELCOME_TEMPLATE,
            "to": self.email,
            "name": self.name,
            "user_id": self.user_id,
        }


@dataclass(frozen=True)
class Outcome:
    """What one record led to: ``queued``, ``resumed`` (after a crash) or ``duplicate``."""

    audit_id: str
    user_id: str
    result: str


def parse_record(record: Any) -> UserCreated:
    """The user-created event carried by one SNS record of a Lambda event."""
    message_id = require_str(record, "Sns.MessageId")
    attribute = optional(record, "Sns.MessageAttributes.event_type.Value")
    if attribute is not None and attribute != EVENT_TYPE:
        raise MalformedEventError(
            f"SNS message {message_id} has message attribute event_type={str(attribute)[:40]!r}; "
            f"expected {EVENT_TYPE!r} (check the subscription's filter policy)"
        )
    raw = require_str(record, "Sns.Message")
    try:
        message = json.loads(raw)
    except ValueError:
        raise MalformedEventError(f"SNS message {message_id} is not JSON") from None
    if not isinstance(message, Mapping):
        raise MalformedEventError(f"SNS message {message_id} must be a JSON object")
    event_type = require(message, "event_type")
    if event_type != EVENT_TYPE:
        raise MalformedEventError(
            f"SNS message {message_id} has event_type {str(event_type)[:40]!r}; "
            f"expected {EVENT_TYPE!r}"
        )
    try:
        return UserCreated(
            message_id=message_id,
            user_id=require_str(message, "user.user_id"),
            email=require_str(message, "user.email"),
            name=require_str(message, "user.name"),
        )
    except MalformedEventError as exc:
        raise MalformedEventError(f"SNS message {message_id}: {exc}") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _lease_until(now: datetime, lease_seconds: float) -> str:
    return str(_epoch(now) + math.ceil(lease_seconds))


def audit_item(event: UserCreated, *, now: datetime, lease_seconds: float) -> dict[str, Any]:
    """The audit record in DynamoDB's attribute-value form, with a pending welcome."""
    return {
        "audit_id": {"S": event.audit_id},
        "timestamp": {"S": _iso(now)},
        "action": {"S": ACTION},
        "user_id": {"S": event.user_id},
        "ttl": {"N": str(_epoch(now + AUDIT_RETENTION))},
        "message_id": {"S": event.message_id},
        "welcome": {"S": PENDING},
        "lease_expires_at": {"N": _lease_until(now, lease_seconds)},
    }


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _claim(
    event: UserCreated, *, dynamodb: Any, table: str, now: datetime, lease_seconds: float
) -> str | None:
    """Writes the audit item or takes over an expired lease: ``"new"`` or ``"resumed"`` when
    the welcome is this invocation's to send, None when it has been queued already."""
    try:
        dynamodb.put_item(
            TableName=table,
            Item=audit_item(event, now=now, lease_seconds=lease_seconds),
            ConditionExpression="attribute_not_exists(audit_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return "new"
    except ClientError as exc:
        if _error_code(exc) != "ConditionalCheckFailedException":
            raise
        existing: Mapping[str, Any] = exc.response.get("Item") or {}

    if existing.get("welcome", {}).get("S") != PENDING:
        return None
    lease_expires_at = existing.get("lease_expires_at", {}).get("N", "0")
    if int(lease_expires_at) > _epoch(now):
        raise WelcomeInProgressError(
            f"{event.audit_id} is being processed by another invocation "
            f"(lease until {_iso(datetime.fromtimestamp(int(lease_expires_at), UTC))})"
        )
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"audit_id": {"S": event.audit_id}},
            UpdateExpression="SET lease_expires_at = :new",
            ConditionExpression="welcome = :pending AND lease_expires_at = :seen",
            ExpressionAttributeValues={
                ":new": {"N": _lease_until(now, lease_seconds)},
                ":pending": {"S": PENDING},
                ":seen": {"N": lease_expires_at},
            },
        )
    except ClientError as exc:
        if _error_code(exc) != "ConditionalCheckFailedException":
            raise
        raise WelcomeInProgressError(
            f"{event.audit_id} was claimed by another invocation at the same moment"
        ) from None
    return "resumed"


def process(
    event: UserCreated,
    *,
    dynamodb: Any,
    sqs: Any,
    table: str,
    queue_url: str,
    now: datetime,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Outcome:
    """Audit record and welcome message for one event, each at most once per SNS message
    (but for the window described in the module docstring)."""
    claim = _claim(event, dynamodb=dynamodb, table=table, now=now, lease_seconds=lease_seconds)
    if claim is None:
        return Outcome(event.audit_id, event.user_id, "duplicate")
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(event.welcome_message(), ensure_ascii=False),
        MessageAttributes={"audit_id": {"DataType": "String", "StringValue": event.audit_id}},
    )
    dynamodb.update_item(
        TableName=table,
        Key={"audit_id": {"S": event.audit_id}},
        UpdateExpression=(
            "SET welcome = :queued, welcome_message_id = :message_id, queued_at = :at "
            "REMOVE lease_expires_at"
        ),
        ExpressionAttributeValues={
            ":queued": {"S": QUEUED},
            ":message_id": {"S": str(sent.get("MessageId", ""))},
            ":at": {"S": _iso(now)},
        },
    )
    return Outcome(event.audit_id, event.user_id, "queued" if claim == "new" else "resumed")


def lease_seconds(context: Any) -> float:
    """As long as this invocation may still run, plus a margin."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return DEFAULT_LEASE_SECONDS
    return float(remaining_ms()) / 1000 + LEASE_MARGIN_SECONDS


def queue_url() -> str:
    """EMAIL_QUEUE, which must be a queue URL (what SendMessage takes)."""
    value = require_env("EMAIL_QUEUE")
    if not value.startswith(("https://", "http://")):
        raise ConfigurationError(
            f"environment variable EMAIL_QUEUE must be a queue URL, got {value!r}"
        )
    return value


def records(event: Any) -> list[Any]:
    found = require(event, "Records")
    if not isinstance(found, list) or not found:
        raise MalformedEventError("event field 'Records' must be a non-empty list of SNS records")
    for index, record in enumerate(found):
        if not isinstance(record, Mapping):
            raise MalformedEventError(
                f"event field 'Records[{index}]' must be an SNS record (an object), "
                f"got {type_name(record)}"
            )
    return found


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    table = require_env("AUDIT_TABLE")
    url = queue_url()
    if is_smoke_test(event):
        logger.info("Smoke test passed")
        return {"statusCode": 200, "body": json.dumps({"smokeTest": "passed"})}

    parsed = [parse_record(record) for record in records(event)]
    outcomes = []
    for user_created in parsed:
        logger.append_keys(audit_id=user_created.audit_id, user_id=user_created.user_id)
        outcome = process(
            user_created,
            dynamodb=client("dynamodb"),
            sqs=client("sqs"),
            table=table,
            queue_url=url,
            now=clock(),
            lease_seconds=lease_seconds(context),
        )
        logger.info("User created processed", extra={"result": outcome.result})
        outcomes.append(outcome)
    return {
        "statusCode": 200,
        "body": json.dumps(
            {"results": [{"audit_id": o.audit_id, "result": o.result} for o in outcomes]}
        ),
    }


imports_done()
