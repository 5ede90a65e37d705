"""Critical-line alerts: what a person reads, and how often they are sent.

An alert is read on a phone, often in the middle of the night: it names the log group,
shows a few distinct sample lines (identical ones collapsed with a count), and links to
the logs. A storm of critical lines must not become a storm of e-mails: per log group,
one alert per window, the next one saying how much was held back in between.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from opskit_common.console import console_link

MAX_SAMPLES = 5
MAX_SAMPLE_CHARS = 500
MAX_SUBJECT_CHARS = 99
"""SNS subjects must be fewer than 100 characters."""
_ELLIPSIS = "..."


@dataclass(frozen=True)
class Sample:
    """One distinct critical message, as shown, and how often it occurred."""

    text: str
    count: int


@dataclass(frozen=True)
class Claim:
    """The rate limiter's answer for one delivery with critical lines."""

    allowed: bool
    """Whether this delivery may alert."""
    previous_alert_at: float | None = None
    """When the log group last alerted (epoch seconds), if known."""
    held_back_lines: int = 0
    """Critical lines not alerted since that alert."""
    held_back_deliveries: int = 0
    """Deliveries with critical lines not alerted since that alert."""


class RateLimiter(Protocol):
    def claim(self, key: str, *, now: float, lines: int) -> Claim:
        """Whether `key` may alert at `now`; if not, counts `lines` as held back."""
        ...

    def release(self, key: str, *, claimed_at: float, previous: float | None) -> None:
        """Gives back a claim whose alert could not be sent."""
        ...


class DynamoDbRateLimiter:
    """One item per log group, claimed with a conditional write: works across sandboxes.

    Concurrent deliveries of one storm land in different sandboxes, whose memory is
    not shared; the condition ``alertedAt <= now - window`` lets exactly one of them
    through per window. Deliveries held back add their counts to the same item, and the
    next alert reports them. Items expire (TTL) a day after the last alert.
    """

    def __init__(self, table: str, *, window_seconds: int, client: Any) -> None:
        self.table = table
        self.window_seconds = window_seconds
        self.client = client

    def claim(self, key: str, *, now: float, lines: int) -> Claim:
        from botocore.exceptions import ClientError

        stamp = int(now)
        try:
            response = self.client.update_item(
                TableName=self.table,
                Key={"logGroup": {"S": key}},
                UpdateExpression=(
                    "SET alertedAt = :now, expiresAt = :expires, "
                    "heldBackLines = :zero, heldBackDeliveries = :zero"
                ),
                ConditionExpression="attribute_not_exists(alertedAt) OR alertedAt <= :cutoff",
                ExpressionAttributeValues={
                    ":now": {"N": str(stamp)},
                    ":cutoff": {"N": str(stamp - self.window_seconds)},
                    ":expires": {"N": str(stamp + max(self.window_seconds, 86_400))},
                    ":zero": {"N": "0"},
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            self.client.update_item(
                TableName=self.table,
                Key={"logGroup": {"S": key}},
                UpdateExpression="ADD heldBackLines :lines, heldBackDeliveries :one",
                ExpressionAttributeValues={":lines": {"N": str(lines)}, ":one": {"N": "1"}},
            )
            return Claim(allowed=False)
        old = response.get("Attributes") or {}
        return Claim(
            allowed=True,
            previous_alert_at=_number(old, "alertedAt"),
            held_back_lines=int(_number(old, "heldBackLines") or 0),
            held_back_deliveries=int(_number(old, "heldBackDeliveries") or 0),
        )

    def release(self, key: str, *, claimed_at: float, previous: float | None) -> None:
        from botocore.exceptions import ClientError

        values = {":claimed": {"N": str(int(claimed_at))}}
        if previous is None:
            update = "REMOVE alertedAt"
        else:
            update = "SET alertedAt = :previous"
            values[":previous"] = {"N": str(int(previous))}
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"logGroup": {"S": key}},
                UpdateExpression=update,
                ConditionExpression="alertedAt = :claimed",
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise


class LocalRateLimiter:
    """The same rule in this sandbox's memory: the fallback when the table cannot be
    reached, so an outage of the store still cannot turn a storm into a flood per sandbox."""

    def __init__(self, *, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self._alerted: dict[str, float] = {}
        self._held_back: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, *, now: float, lines: int) -> Claim:
        with self._lock:
            previous = self._alerted.get(key)
            if previous is not None and now - previous < self.window_seconds:
                held_lines, held_deliveries = self._held_back.get(key, (0, 0))
                self._held_back[key] = (held_lines + lines, held_deliveries + 1)
                return Claim(allowed=False)
            self._alerted[key] = now
            held_lines, held_deliveries = self._held_back.pop(key, (0, 0))
            return Claim(
                allowed=True,
                previous_alert_at=previous,
                held_back_lines=held_lines,
                held_back_deliveries=held_deliveries,
            )

    def release(self, key: str, *, claimed_at: float, previous: float | None) -> None:
        with self._lock:
            if self._alerted.get(key) == claimed_at:
                if previous is None:
                    del self._alerted[key]
                else:
                    self._alerted[key] = previous


def _number(item: dict[str, Any], name: str) -> float | None:
    value = item.get(name, {}).get("N")
    return None if value is None else float(value)


def samples(lines: Sequence[str], *, limit: int = MAX_SAMPLES) -> tuple[list[Sample], int]:
    """The first `limit` distinct lines, in order of first appearance, each with its count
    and shown on one line of at most MAX_SAMPLE_CHARS; and how many distinct lines there were."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    shown = [
        Sample(text=_one_line(text, MAX_SAMPLE_CHARS), count=count)
        for text, count in list(counts.items())[:limit]
    ]
    return shown, len(counts)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - len(_ELLIPSIS)] + _ELLIPSIS


def subject(*, environment: str, log_group: str, critical_lines: int) -> str:
    """``[CRITICAL] prod: 3 critical lines in /aws/lambda/orders``, under 100 characters:
    a long log group loses its start, not the part that tells groups apart."""
    prefix = f"[CRITICAL] {environment + ': ' if environment else ''}"
    prefix += f"{_count(critical_lines, 'critical line')} in "
    room = MAX_SUBJECT_CHARS - len(prefix)
    if len(log_group) > room:
        log_group = _ELLIPSIS + log_group[-(room - len(_ELLIPSIS)) :]
    return (prefix + log_group)[:MAX_SUBJECT_CHARS]


@dataclass(frozen=True)
class Alert:
    """Everything an alert says."""

    environment: str
    account: str
    region: str
    log_group: str
    log_stream: str
    processed_events: int
    error_lines: int
    critical_lines: int
    first_at: datetime | None
    """When the delivery's first log event was logged."""
    last_at: datetime | None
    samples: list[Sample]
    distinct: int
    claim: Claim
    window_seconds: int
    now: float


def body(alert: Alert) -> str:
    """The alert as plain text: readable in an e-mail client and in a chat forward."""
    lines = [
        f"{alert.critical_lines} critical and {alert.error_lines} error lines "
        f"among {alert.processed_events} log events.",
        "",
        f"Log group:   {alert.log_group}",
        f"Log stream:  {alert.log_stream}",
        f"Account:     {alert.account}  Region: {alert.region or 'unknown'}"
        + (f"  Environment: {alert.environment}" if alert.environment else ""),
    ]
    if alert.first_at is not None and alert.last_at is not None:
        lines.append(f"Log events:  {_when(alert.first_at)} to {_when(alert.last_at)}")
    shown = len(alert.samples)
    lines += [
        "",
        f"Critical lines ({alert.distinct} distinct"
        + (f", the first {shown} shown" if alert.distinct > shown else "")
        + "):",
        *(f"  {sample.count}x  {sample.text}" for sample in alert.samples),
        "",
    ]
    claim = alert.claim
    if claim.held_back_lines or claim.held_back_deliveries:
        since = (
            f" (last alert {_when(_utc(claim.previous_alert_at))})"
            if claim.previous_alert_at is not None
            else ""
        )
        lines.append(
            f"Held back since the previous alert{since}: "
            f"{_count(claim.held_back_lines, 'critical line')} in "
            f"{_count(claim.held_back_deliveries, 'delivery', 'deliveries')}."
        )
    minutes = max(1, round(alert.window_seconds / 60))
    lines.append(
        f"At most one alert per {minutes} minutes for this log group: the next one no sooner "
        f"than {_when(_utc(alert.now + alert.window_seconds))}. The CriticalCount metric "
        "keeps counting meanwhile."
    )
    link = console_url(alert.region, alert.log_group, alert.log_stream) if alert.region else None
    if link:
        lines += ["", f"Logs: {link}"]
    return "\n".join(lines)


def console_url(region: str, log_group: str, log_stream: str) -> str | None:
    """The log stream in the CloudWatch console of the region's partition (which escapes
    names twice, ``%`` as ``$``); None where the partition has no public console."""

    def escape(name: str) -> str:
        return quote(quote(name, safe=""), safe="").replace("%", "$")

    return console_link(
        region,
        f"/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{escape(log_group)}/log-events/{escape(log_stream)}",
    )


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def event_time(entry: Any) -> datetime | None:
    """A log event's timestamp (epoch milliseconds) as UTC, if it has a usable one."""
    stamp = entry.get("timestamp") if isinstance(entry, dict) else None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
