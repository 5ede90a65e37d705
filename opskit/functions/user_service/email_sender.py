"""E-mail sender: renders a built-in template per SQS message and sends it with SES.

Environment:
    FROM_EMAIL         the verified SES identity (address, or address in a verified domain)
                       every message is sent from
    CONFIGURATION_SET  optional SES configuration set (bounce, complaint, delivery events)

Message body: ``{"template": "welcome", "to": ..., "name": ..., "user_id": ...}``; the
template decides which fields are required, other fields are ignored.

Event source, set by the construct (none of it is visible to this code):
- a standard SQS queue (not FIFO: Lambda allows no batching window on FIFO sources), SSE,
  SSL enforced, 14-day retention, visibility timeout at least 6x this function's timeout,
  redrive to a dead-letter queue after 5 receives (``maxReceiveCount: 5``);
- event source mapping: batch size 10, maximum batching window 5 s,
  ``ReportBatchItemFailures``, and maximum concurrency 10 (``ScalingConfig``);
- reserved concurrency 10. Pollers ignore reserved concurrency: without the mapping's
  maximum concurrency they would be throttled, and every throttled batch counts a receive
  towards the dead-letter queue without the function ever seeing it.

Partial batch failures: each record succeeds or fails on its own, and only the failed ones
are returned in ``batchItemFailures``, to be received again after the visibility timeout.
A malformed message (not JSON, unknown template, missing or bad field) fails just its record;
so does an SES error, throttling included, which the redrive retries. When every record of a
batch fails, the handler raises instead, so the invocation counts as an error and Lambda
scales the pollers back (what SES throttling needs). Records not yet started when the
invocation's deadline approaches are returned as failed rather than cut off by the timeout,
which would return the whole batch, sent e-mails included.

Hand-made rather than Powertools' BatchProcessor: the loop is a few lines, and importing
``aws_lambda_powertools.utilities.batch`` costs about 40 ms of cold start (asyncio and every
event data class).

SES: API v2 SendEmail with Simple content, subject, text and HTML built here. Templates stored
in SES are not used: this keeps every template reviewed with the code, and moto implements
plain v2 sends but not v2 templated ones.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.logging import Logger
from botocore.exceptions import BotoCoreError, ClientError
from opskit_common.clients import client
from opskit_common.config import require_env
from opskit_common.deadline import Deadline
from opskit_common.events import MalformedEventError, is_smoke_test
from opskit_common.startup import imports_done

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "email-sender")

MAX_FIELD_CHARS = 1_000
MAX_ADDRESS_CHARS = 254
DEADLINE_MARGIN_SECONDS = 3.0
"""Time kept for the records in flight and the answer; later records are returned unsent."""
THROTTLING_CODES = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
)

# One address, no display name, no list: a message must never fan out to more recipients.
_ADDRESS = re.compile(r"^[^@\s,;<>()\"']+@[^@\s,;<>()\"'.]+(\.[^@\s,;<>()\"'.]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SendError(RuntimeError):
    """SES did not accept the message; the record is retried through the queue's redrive."""

    def __init__(self, message: str, *, code: str, throttled: bool) -> None:
        super().__init__(message)
        self.code = code
        self.throttled = throttled


class BatchFailedError(RuntimeError):
    """Every record of the batch failed; the whole batch returns to the queue."""


@dataclass(frozen=True)
class Template:
    """A built-in template: ``{field}`` placeholders, HTML values escaped when rendered."""

    subject: str
    text: str
    html: str
    fields: tuple[str, ...]


TEMPLATES: Mapping[str, Template] = {
    "welcome": Template(
        subject="Welcome, {name}",
        text=(
            "Hello {name},\n\n"
            "your account has been created. Your user id is {user_id}.\n\n"
            "If you did not sign up, you can ignore this message.\n"
        ),
        html=(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Welcome</title></head>'
            "<body><p>Hello {name},</p>"
            "<p>your account has been created. Your user id is <code>{user_id}</code>.</p>"
            "<p>If you did not sign up, you can ignore this message.</p></body></html>"
        ),
        fields=("name", "user_id"),
    ),
}


@dataclass(frozen=True)
class Email:
    """One message to send: its recipient and rendered content."""

    template: str
    to: str
    subject: str
    text: str
    html: str
    user_id: str | None = None


def _field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise MalformedEventError(f"message is missing required field '{name}'")
    if not isinstance(value, str):
        raise MalformedEventError(
            f"message field '{name}' must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise MalformedEventError(f"message field '{name}' must not be empty")
    if len(value) > MAX_FIELD_CHARS:
        raise MalformedEventError(f"message field '{name}' is longer than {MAX_FIELD_CHARS}")
    return value


def template_named(name: str) -> Template:
    template = TEMPLATES.get(name)
    if template is None:
        raise MalformedEventError(
            f"message has unknown template {name[:40]!r}; "
            f"valid choices: {', '.join(sorted(TEMPLATES))}"
        )
    return template


def render(template_name: str, to: str, values: Mapping[str, str]) -> Email:
    """The e-mail built from a built-in template; values are escaped in HTML and stripped of
    control characters in the subject."""
    template = template_named(template_name)
    plain = {name: values[name] for name in template.fields}
    subject_values = {name: _CONTROL.sub(" ", value) for name, value in plain.items()}
    escaped = {name: html.escape(value, quote=True) for name, value in plain.items()}
    return Email(
        template=template_name,
        to=to,
        subject=template.subject.format_map(subject_values),
        text=template.text.format_map(plain),
        html=template.html.format_map(escaped),
        user_id=values.get("user_id"),
    )


def parse_message(raw_body: Any) -> Email:
    """The e-mail an SQS message body asks for, or MalformedEventError saying what is wrong."""
    if not isinstance(raw_body, str):
        raise MalformedEventError("SQS record has no string body")
    try:
        body = json.loads(raw_body)
    except ValueError:
        raise MalformedEventError("message body is not JSON") from None
    if not isinstance(body, Mapping):
        raise MalformedEventError("message body must be a JSON object")
    template_name = _field(body, "template")
    template = template_named(template_name)
    to = _field(body, "to").strip()
    if len(to) > MAX_ADDRESS_CHARS or not _ADDRESS.match(to):
        raise MalformedEventError("message field 'to' is not a single e-mail address")
    values = {name: _field(body, name) for name in template.fields}
    return render(template_name, to, values)


def send(email: Email, *, ses: Any, from_email: str, configuration_set: str | None = None) -> str:
    """Sends with SES v2 (Simple content); the SES message id, or SendError."""
    request: dict[str, Any] = {
        "FromEmailAddress": from_email,
        "Destination": {"ToAddresses": [email.to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            }
        },
        "EmailTags": [{"Name": "template", "Value": email.template}],
    }
    if configuration_set:
        request["ConfigurationSetName"] = configuration_set
    try:
        response = ses.send_email(**request)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
        raise SendError(
            f"SES refused the {email.template} e-mail: {code}",
            code=code,
            throttled=code in THROTTLING_CODES,
        ) from exc
    except BotoCoreError as exc:
        raise SendError(
            f"SES unreachable for the {email.template} e-mail: {type(exc).__name__}",
            code=type(exc).__name__,
            throttled=False,
        ) from exc
    return str(response.get("MessageId", ""))


@dataclass(frozen=True)
class BatchResult:
    """Message ids sent, and those to return to the queue with the reason (never content)."""

    sent: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": mid} for mid, _ in self.failed]}


def _message_ids(records: Sequence[Any]) -> list[str]:
    """Every record's messageId; without one, no partial failure can be reported."""
    ids = []
    for index, record in enumerate(records):
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        if not isinstance(message_id, str) or not message_id:
            raise MalformedEventError(f"SQS record {index} has no messageId")
        ids.append(message_id)
    return ids


def process_batch(
    records: Sequence[Any],
    *,
    ses: Any,
    from_email: str,
    configuration_set: str | None = None,
    expired: Callable[[], bool] = lambda: False,
) -> BatchResult:
    """Sends one e-mail per record; a record's failure is its own."""
    sent: list[str] = []
    failed: list[tuple[str, str]] = []
    for record, message_id in zip(records, _message_ids(records), strict=True):
        if expired():
            failed.append((message_id, "not attempted: the invocation's deadline is near"))
            continue
        try:
            email = parse_message(record.get("body"))
            ses_id = send(
                email, ses=ses, from_email=from_email, configuration_set=configuration_set
            )
        except MalformedEventError as exc:
            logger.error("Malformed message", extra={"message_id": message_id, "error": str(exc)})
            failed.append((message_id, str(exc)))
            continue
        except SendError as exc:
            log = logger.warning if exc.throttled else logger.error
            log("E-mail not sent", extra={"message_id": message_id, "error": str(exc)})
            failed.append((message_id, str(exc)))
            continue
        logger.info(
            "E-mail sent",
            extra={
                "message_id": message_id,
                "template": email.template,
                "user_id": email.user_id,
                "ses_message_id": ses_id,
            },
        )
        sent.append(message_id)
    return BatchResult(tuple(sent), tuple(failed))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    from_email = require_env("FROM_EMAIL")
    configuration_set = os.environ.get("CONFIGURATION_SET", "").strip() or None
    if is_smoke_test(event):
        for name, template in TEMPLATES.items():
            render(name, "smoke-test@example.com", dict.fromkeys(template.fields, "smoke test"))
        logger.info("Smoke test passed")
        return {"statusCode": 200, "body": json.dumps({"smokeTest": "passed"})}

    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise MalformedEventError("event field 'Records' must be a list of SQS records")
    deadline = Deadline.from_context(context, margin_seconds=DEADLINE_MARGIN_SECONDS)
    result = process_batch(
        records,
        ses=client("sesv2"),
        from_email=from_email,
        configuration_set=configuration_set,
        expired=deadline.expired,
    )
    logger.info("Batch processed", extra={"sent": len(result.sent), "failed": len(result.failed)})
    if records and not result.sent:
        raise BatchFailedError(f"all {len(records)} records failed; first: {result.failed[0][1]}")
    return result.response()


imports_done()
