"""Posting JSON to webhooks: timeouts, retries with backoff, and a circuit breaker.

Built on ``urllib.request`` alone to keep cold start and package size small. A webhook
URL is a credential (whoever holds it can post to the channel), so no message, log
record or exception raised here contains it: the host is the most that is named, and
underlying exceptions are summarised rather than chained.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_MAX_BODY_BYTES = 64 * 1024


class DeliveryError(RuntimeError):
    """The payload was not delivered. Raised once retries are exhausted or pointless."""

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        status: int | None = None,
        attempts: int = 0,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


class CircuitOpenError(DeliveryError):
    """The destination failed repeatedly; delivery was not attempted."""


@dataclass(frozen=True)
class HttpResponse:
    """A successful (2xx) response."""

    status: int
    body: bytes
    attempts: int


class CircuitBreaker:
    """Fails fast after ``failure_threshold`` consecutive failed deliveries.

    While a destination is down, every invocation would otherwise spend its whole
    retry budget (and Lambda duration) on it. Open for ``cooldown_seconds``, then
    half-open: one delivery is let through; success closes it, failure re-opens it.
    Counts deliveries (a ``post_json`` call with its retries), not HTTP attempts.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return self.CLOSED
        if self._clock() - self._opened_at < self.cooldown_seconds:
            return self.OPEN
        return self.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def remaining_cooldown(self) -> float:
        """Seconds until the breaker lets a trial delivery through (0 when closed)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_seconds - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a delivery may be attempted now; claims the single half-open trial."""
        with self._lock:
            state = self._state()
            if state == self.CLOSED:
                return True
            if state == self.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_in_flight or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._trial_in_flight = False

    def reset(self) -> None:
        self.record_success()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib turns a redirected POST into a GET without body; fail instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


def backoff_delay(
    attempt: int, *, base: float, maximum: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with equal jitter for retry number ``attempt`` (1-based)."""
    ceiling: float = min(maximum, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def _safe_excerpt(body: bytes, url: str) -> str:
    """A short, single-line excerpt of an error body, or nothing if it could echo the URL."""
    text = body[:200].decode("utf-8", "replace").strip()
    parts = urlsplit(url)
    secret_bits = [p for p in (parts.path, parts.query, parts.netloc) if len(p) > 1]
    if not text or len(text) > 100 or "\n" in text or any(b in text for b in secret_bits):
        return ""
    return f": {text}"


def _describe(exc: BaseException) -> str:
    """A URL-free summary of a transport error."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        return "timed out"
    return f"connection error ({type(reason).__name__})"


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    body: bytes = b""
    problem: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def _send(request: urllib.request.Request, url: str, timeout: float) -> _Outcome:
    """One HTTP attempt, summarised without the URL."""
    try:
        with _opener.open(request, timeout=timeout) as response:
            return _Outcome(status=response.status, body=response.read(_MAX_BODY_BYTES))
    except urllib.error.HTTPError as exc:
        error_body = _read_quietly(exc)
        return _Outcome(
            status=exc.code,
            body=error_body,
            problem=f"HTTP {exc.code}{_safe_excerpt(error_body, url)}",
            retry_after=parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
        )
    except (OSError, http.client.HTTPException) as exc:
        return _Outcome(status=None, problem=_describe(exc))


def post_json(
    url: str,
    payload: Any,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    backoff_base: float = 0.5,
    backoff_max: float = 8.0,
    max_retry_after: float = 10.0,
    breaker: CircuitBreaker | None = None,
    deadline: float | None = None,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> HttpResponse:
    """POST ``payload`` as JSON; return the 2xx response or raise :class:`DeliveryError`.

    Retries 429, 5xx, timeouts and connection errors up to ``attempts`` in total,
    waiting ``Retry-After`` (capped at ``max_retry_after``) or exponential backoff with
    jitter. Other statuses (4xx, 3xx) fail at once: repeating the request cannot help.
    ``deadline`` (a ``clock()`` value, e.g. from the Lambda's remaining time) stops
    retrying, and shortens the attempt timeout, before the function would time out.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise DeliveryError("webhook URL is not an absolute http(s) URL", host=host)
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    if breaker is not None and not breaker.allow():
        raise CircuitOpenError(
            f"delivery to {host} skipped: circuit open after "
            f"{breaker.consecutive_failures} consecutive failed deliveries; "
            f"next attempt allowed in {breaker.remaining_cooldown():.0f}s",
            host=host,
            retryable=True,
        )

    request = urllib.request.Request(
        url,
        data=json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "cdk-opskit",
            **(headers or {}),
        },
        method="POST",
    )
    attempt = 0
    try:
        while True:
            attempt += 1
            attempt_timeout = timeout
            if deadline is not None:
                attempt_timeout = max(0.05, min(timeout, deadline - clock()))
            outcome = _send(request, url, attempt_timeout)
            if outcome.ok or not outcome.retryable:
                if breaker is not None:
                    breaker.record_success()  # the destination answered
                if outcome.ok:
                    return HttpResponse(
                        status=outcome.status or 200, body=outcome.body, attempts=attempt
                    )
                raise DeliveryError(
                    f"delivery to {host} rejected with {outcome.problem}; not retried",
                    host=host,
                    status=outcome.status,
                    attempts=attempt,
                )
            problem = outcome.problem
            if attempt >= attempts:
                break
            delay = (
                min(outcome.retry_after, max_retry_after)
                if outcome.retry_after is not None
                else backoff_delay(attempt, base=backoff_base, maximum=backoff_max, rng=rng)
            )
            if deadline is not None and clock() + delay >= deadline:
                problem += f"; no time left to wait {delay:.1f}s for a retry"
                break
            logger.warning(
                "Webhook delivery attempt failed; retrying",
                extra={"host": host, "attempt": attempt, "problem": problem, "delay": delay},
            )
            sleep(delay)
    except DeliveryError:
        raise
    except BaseException:
        if breaker is not None:
            breaker.record_failure()
        raise

    if breaker is not None:
        breaker.record_failure()
    raise DeliveryError(
        f"delivery to {host} failed after {attempt} attempt(s): {problem}",
        host=host,
        status=outcome.status,
        attempts=attempt,
        retryable=True,
    )


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(_MAX_BODY_BYTES)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        exc.close()
