"""Deployment notifier: posts CodePipeline and alarm state changes to a Slack or Teams webhook.

Triggered asynchronously by EventBridge, with CodePipeline execution, stage and action
state changes, and with CloudWatch alarm state changes (the channel that stays when
alert e-mail fails). A failed delivery raises, so Lambda's async
retries and the dead-letter queue keep the event; so does a ``Retry-After`` longer than
this function may wait, after one request. The webhook URL is a credential: it is read
from Secrets Manager, cached, and never logged or put in an error message. When the
cached URL is refused as revoked (401/403/404/410), the secret is read again and a
rotated URL gets one retry. A 2xx counts as delivered: Teams Workflows webhooks answer
202, which means the message was queued for the flow, not that it was shown.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from aws_lambda_powertools.logging import Logger
from opskit_common.config import ConfigurationError, env_choice, require_env
from opskit_common.console import console_link, partition_of
from opskit_common.deadline import Deadline
from opskit_common.events import (
    MalformedEventError,
    is_smoke_test,
    optional,
    parse_timestamp,
    require,
    require_str,
)
from opskit_common.http import CircuitBreaker, DeliveryError, HttpResponse, post_json
from opskit_common.secrets import forget, get_secret_string
from opskit_common.startup import imports_done

# The construct names the service (POWERTOOLS_SERVICE_NAME); the level comes from
# POWERTOOLS_LOG_LEVEL / LOG_LEVEL, or from the function's JSON logging configuration.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "deployment-notifier")

FORMATS = ("slack", "teams")
PIPELINE_EVENT = "CodePipeline Pipeline Execution State Change"
STAGE_EVENT = "CodePipeline Stage Execution State Change"
ACTION_EVENT = "CodePipeline Action Execution State Change"
ALARM_EVENT = "CloudWatch Alarm State Change"
DETAIL_TYPES = (PIPELINE_EVENT, STAGE_EVENT, ACTION_EVENT, ALARM_EVENT)

GOOD_STATES = frozenset({"SUCCEEDED", "OK"})
BAD_STATES = frozenset({"FAILED", "ALARM"})
SLACK_GOOD, SLACK_DANGER, SLACK_WARNING = "good", "danger", "warning"
# Adaptive Cards have no free colour: a container style and a text colour per state.
TEAMS_GOOD, TEAMS_DANGER = ("good", "Good"), ("attention", "Attention")
TEAMS_WARNING = ("warning", "Warning")

HTTP_TIMEOUT_SECONDS = 5.0
HTTP_ATTEMPTS = 3
MAX_RETRY_AFTER_SECONDS = 10.0
# Stop retrying this long before the Lambda timeout, so the failure is ours, not a timeout.
DEADLINE_MARGIN_SECONDS = 1.0

# Any region-shaped name, so that a region newer than the table below still gets its
# message; and nothing but [a-z0-9-], since it becomes part of the link's host name.
_REGION = re.compile(r"[a-z]{2,}(?:-[a-z0-9]+)+-[0-9]+", re.ASCII)

REVOKED_STATUSES = frozenset({401, 403, 404, 410})
"""Answers that say the URL itself is no longer valid (rotated, revoked, deleted)."""

# One destination per function, so one breaker: after repeated failed deliveries,
# later invocations fail fast (and go to async retry / DLQ) instead of burning duration.
breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=60.0)
retry_sleep = time.sleep  # replaced in tests


@dataclass(frozen=True)
class Notification:
    """What a state-change event says, independent of the chat format."""

    title: str
    state: str
    region: str
    account: str
    time: datetime  # timezone-aware UTC
    facts: tuple[tuple[str, str], ...]
    console_url: str | None
    link_title: str
    source: str
    """Names the sender in the footer: ``CodePipeline`` or ``CloudWatch``."""
    summary: dict[str, Any]
    """What the handler returns and logs about it."""

    @property
    def epoch_seconds(self) -> int:
        return int(self.time.timestamp())

    @property
    def tone(self) -> str:
        """``good``, ``bad`` or ``warning``: what the colour says."""
        return "good" if self.state in GOOD_STATES else "bad" if self.state in BAD_STATES else ""


def console_url(pipeline: str, execution_id: str, region: str) -> str | None:
    """Link to the execution's timeline in its partition's console."""
    return console_link(
        region,
        f"/codesuite/codepipeline/pipelines/{quote(pipeline, safe='')}/executions/"
        f"{quote(execution_id, safe='')}/timeline?region={region}",
    )


def alarm_console_url(alarm_name: str, region: str) -> str | None:
    """Link to the alarm in its partition's CloudWatch console."""
    return console_link(
        region, f"/cloudwatch/home?region={region}#alarmsV2:alarm/{quote(alarm_name, safe='')}"
    )


def parse_event(event: Any) -> Notification:
    """The notification described by an EventBridge event, or MalformedEventError."""
    detail_type = optional(event, "detail-type")
    if detail_type is not None and detail_type not in DETAIL_TYPES:
        raise MalformedEventError(
            f"event has unsupported detail-type {str(detail_type)[:80]!r}; "
            f"expected one of: {', '.join(DETAIL_TYPES)}"
        )
    if detail_type == ALARM_EVENT:
        return _alarm_notification(event)
    return _pipeline_notification(event, detail_type)


def _origin(event: Any) -> tuple[str, str, datetime]:
    """Region, account and time of any EventBridge event."""
    region = require_str(event, "region")
    if not _REGION.fullmatch(region):
        raise MalformedEventError(f"event field 'region' is not an AWS region: {region[:40]!r}")
    return (
        region,
        str(require(event, "account")),
        parse_timestamp(require(event, "time"), field="time"),
    )


def _pipeline_notification(event: Any, detail_type: str | None) -> Notification:
    pipeline = require_str(event, "detail.pipeline")
    execution_id = require_str(event, "detail.execution-id")
    state = require_str(event, "detail.state").upper()
    region, account, when = _origin(event)
    if detail_type in (STAGE_EVENT, ACTION_EVENT):
        stage: str | None = require_str(event, "detail.stage")
    else:
        stage = optional(event, "detail.stage")
    if detail_type == ACTION_EVENT:
        action: str | None = require_str(event, "detail.action")
    else:
        action = optional(event, "detail.action")
    stage = None if stage is None else str(stage)
    action = None if action is None else str(action)

    scope = " / ".join(p for p in (stage, action) if p)
    facts = [("Pipeline", pipeline), ("State", state)]
    facts += [(name, value) for name, value in (("Stage", stage), ("Action", action)) if value]
    facts += [("Execution", execution_id), ("Account / Region", f"{account} / {region}")]
    return Notification(
        title=f"{pipeline}{f' ({scope})' if scope else ''}: {state}",
        state=state,
        region=region,
        account=account,
        time=when,
        facts=tuple(facts),
        console_url=console_url(pipeline, execution_id, region),
        link_title="View execution",
        source="CodePipeline",
        summary={
            "pipeline": pipeline,
            "executionId": execution_id,
            "state": state,
            "stage": stage,
            "action": action,
        },
    )


def _alarm_notification(event: Any) -> Notification:
    name = require_str(event, "detail.alarmName")
    state = require_str(event, "detail.state.value").upper()
    region, account, when = _origin(event)
    facts = [("Alarm", name), ("State", state)]
    previous = optional(event, "detail.previousState.value")
    if isinstance(previous, str) and previous:
        facts.append(("Previous state", previous.upper()))
    reason = optional(event, "detail.state.reason")
    if isinstance(reason, str) and reason:
        facts.append(("Reason", reason[:500]))
    description = optional(event, "detail.configuration.description")
    if isinstance(description, str) and description:
        facts.append(("Description", description[:500]))
    facts.append(("Account / Region", f"{account} / {region}"))
    return Notification(
        title=f"Alarm {name}: {state}",
        state=state,
        region=region,
        account=account,
        time=when,
        facts=tuple(facts),
        console_url=alarm_console_url(name, region),
        link_title="View alarm",
        source="CloudWatch",
        summary={"alarm": name, "state": state},
    )


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification) -> dict[str, Any]:
    """Slack incoming-webhook message: one coloured attachment."""
    title = _slack_escape(n.title)
    link = n.console_url
    attachment: dict[str, Any] = {
        "fallback": f"{title}: {link}" if link else title,
        "color": {"good": SLACK_GOOD, "bad": SLACK_DANGER}.get(n.tone, SLACK_WARNING),
        "title": title,
        "fields": [
            {"title": name, "value": _slack_escape(value), "short": True} for name, value in n.facts
        ],
        "footer": n.source,
        "ts": n.epoch_seconds,
    }
    if link:
        attachment["title_link"] = link
    return {"text": title, "attachments": [attachment]}


def teams_payload(n: Notification) -> dict[str, Any]:
    """Microsoft Teams message with an Adaptive Card, as Teams Workflows webhooks expect."""
    style, colour = {"good": TEAMS_GOOD, "bad": TEAMS_DANGER}.get(n.tone, TEAMS_WARNING)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "Container",
                "style": style,
                "items": [
                    {
                        "type": "TextBlock",
                        "text": n.title,
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": colour,
                        "wrap": True,
                    },
                    {
                        "type": "TextBlock",
                        "text": n.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
                        "isSubtle": True,
                        "spacing": "None",
                    },
                ],
            },
            {
                "type": "FactSet",
                "facts": [{"title": name, "value": value} for name, value in n.facts],
            },
        ],
    }
    link = n.console_url
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": n.link_title, "url": link}]
    return {
        "type": "message",
        "summary": n.title,
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def build_payload(n: Notification, webhook_format: str) -> dict[str, Any]:
    if webhook_format == "teams":
        return teams_payload(n)
    return slack_payload(n)


def webhook_format() -> str:
    """WEBHOOK_FORMAT, validated: ``slack`` (default) or ``teams``."""
    return env_choice("WEBHOOK_FORMAT", FORMATS, default="slack")


def webhook_url_from_secret(secret_string: str, *, secret_id: str) -> str:
    """The URL held by the secret: the string itself, or JSON ``{"url": ...}``."""
    value = secret_string.strip()
    if value.startswith("{"):
        try:
            value = json.loads(value).get("url") or ""
        except (ValueError, AttributeError):
            value = ""
        if not isinstance(value, str):
            value = ""
        value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"secret {secret_id} does not hold a http(s) webhook URL "
            '(expected the URL itself or JSON {"url": "https://..."})'
        )
    return value


def webhook_url(secrets_client: Any | None = None) -> str:
    """The webhook URL from the secret named by WEBHOOK_SECRET_ARN (cached across invocations)."""
    secret_id = require_env("WEBHOOK_SECRET_ARN")
    return webhook_url_from_secret(
        get_secret_string(secret_id, client=secrets_client), secret_id=secret_id
    )


def _post(url: str, payload: dict[str, Any], deadline: float | None) -> HttpResponse:
    return post_json(
        url,
        payload,
        timeout=HTTP_TIMEOUT_SECONDS,
        attempts=HTTP_ATTEMPTS,
        max_retry_after=MAX_RETRY_AFTER_SECONDS,
        breaker=breaker,
        deadline=deadline,
        sleep=retry_sleep,
    )


def deliver(
    payload: dict[str, Any], *, deadline: float | None, secrets_client: Any | None = None
) -> HttpResponse:
    """Posts ``payload`` to the webhook, and once more if a refused URL has been rotated.

    The cached URL can be stale for the whole cache TTL; a URL refused as revoked makes
    the secret be read again, and only a changed URL is worth the one retry.
    """
    url = webhook_url(secrets_client)
    try:
        return _post(url, payload, deadline)
    except DeliveryError as exc:
        if exc.status not in REVOKED_STATUSES:
            raise
        rejected = exc
    secret_id = require_env("WEBHOOK_SECRET_ARN")
    forget(secret_id)
    fresh = webhook_url(secrets_client)
    if fresh == url:
        raise DeliveryError(
            f"{rejected}; secret {secret_id} still holds the rejected URL: "
            "put the new webhook URL in it",
            host=rejected.host,
            status=rejected.status,
            attempts=rejected.attempts,
        )
    logger.info(
        "Webhook URL refused; the secret holds a new one, retrying once",
        extra={"status": rejected.status},
    )
    return _post(fresh, payload, deadline)


def check_configuration(secrets_client: Any | None = None) -> dict[str, Any]:
    """Everything a delivery needs except the delivery itself; raises ConfigurationError."""
    fmt = webhook_format()
    webhook_url(secrets_client)
    return {"smokeTest": "passed", "format": fmt}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if is_smoke_test(event):
        result = check_configuration()
        logger.info("Smoke test passed", extra=result)
        return {"statusCode": 200, "body": json.dumps(result)}

    fmt = webhook_format()
    notification = parse_event(event)
    logger.append_keys(**{k: v for k, v in notification.summary.items() if v is not None})
    if partition_of(notification.region) is None:
        logger.warning(
            f"Console link assumes the aws partition: region {notification.region} "
            "matches no known partition"
        )
    deadline = Deadline.from_context(context, margin_seconds=DEADLINE_MARGIN_SECONDS)
    try:
        response = deliver(build_payload(notification, fmt), deadline=deadline.at)
    except DeliveryError as exc:
        logger.error("Notification not delivered", extra={"error": str(exc), "format": fmt})
        raise
    logger.info(
        "Notification delivered",
        extra={"format": fmt, "status": response.status, "attempts": response.attempts},
    )
    return {
        "statusCode": 200,
        "body": json.dumps({"delivered": True, "format": fmt, **notification.summary}),
    }


imports_done()
