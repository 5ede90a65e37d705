"""Posting JSON to webhooks: timeouts, retries with backoff, and a circuit breaker.

Built on ``urllib.request`` alone to keep cold start and package size small. A webhook
URL is a credential (whoever holds it can post to the channel), so no message, log
record or exception raised here contains it: the host is the most that is named, and
underlying exceptions are summarised rather than chained.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache, partial
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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.status = status
        self.attempts = attempts
        self.retryable = retryable
        self.retry_after = retry_after


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


def _shutdown(sock: socket.socket) -> None:
    # socket.socket's own method: an SSLSocket's would also drop its TLS state under the
    # thread that is reading. OSError: already closed.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """Ends an exchange that outlives its time, however slowly the server trickles.

    Socket timeouts bound each read, not their sum. At expiry the connection's socket is
    shut down, which makes a read blocked in another thread return at once.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """Hands its socket to the watchdog once connected (for HTTPS: once TLS is set up)."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.watch(self.sock)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, http.client.HTTPSConnection):
    pass


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_WatchedHTTPConnection, watchdog=self._watchdog), req)


@cache
def _tls_context() -> ssl.SSLContext:
    """One per process: loading the CA bundle for every connection costs milliseconds."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__(context=_tls_context())
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            partial(_WatchedHTTPSConnection, watchdog=self._watchdog),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


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


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    body: bytes = b""
    problem: str = ""
    retry_after: float | None = None
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.final:
            return False
        return self.status is None or self.status == 429 or self.status >= 500


def _transport_failure(exc: BaseException) -> _Outcome:
    """A URL-free summary of a transport error. A refused certificate is final: the same
    certificate is refused again, and its reason is what the operator needs to see."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        return _Outcome(status=None, problem="timed out")
    if isinstance(reason, ssl.SSLCertVerificationError):
        # verify_message and reason are set only on the errors the ssl module raises itself
        why = getattr(reason, "verify_message", None) or getattr(reason, "reason", None)
        return _Outcome(
            status=None, problem=f"an untrusted certificate ({why or 'unverified'})", final=True
        )
    return _Outcome(status=None, problem=f"connection error ({type(reason).__name__})")


def _send(request: urllib.request.Request, url: str, timeout: float) -> _Outcome:
    """One HTTP attempt, all of it within ``timeout`` seconds, summarised without the URL.

    A status that arrived as time ran out proves nothing (http.client takes a status line
    cut short, ``HTTP/1.1 200 O``, for a whole one), so it counts as a timeout. A 2xx that
    arrived in time means the message was accepted: a body cut short by the time limit
    does not turn that into a failure (retrying would post the message twice).
    """
    timed_out = _Outcome(status=None, problem="timed out")
    watchdog = _Watchdog(timeout)
    opener = urllib.request.build_opener(
        _NoRedirects(), _WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog)
    )
    with watchdog:
        try:
            with opener.open(request, timeout=timeout) as response:
                if watchdog.expired:
                    return timed_out
                status = response.status
                body = _read_quietly(response)
            return _Outcome(status=status, body=body)
        except urllib.error.HTTPError as exc:
            if watchdog.expired:
                exc.close()
                return timed_out
            try:
                error_body = _read_quietly(exc)
            finally:
                exc.close()
            return _Outcome(
                status=exc.code,
                body=error_body,
                problem=f"HTTP {exc.code}{_safe_excerpt(error_body, url)}",
                retry_after=parse_retry_after(
                    exc.headers.get("Retry-After") if exc.headers else None
                ),
            )
        except (OSError, http.client.HTTPException) as exc:
            return timed_out if watchdog.expired else _transport_failure(exc)


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
    waiting ``Retry-After`` or exponential backoff with jitter. Other statuses (4xx, 3xx)
    and a certificate that fails verification (named in the error) fail at once:
    repeating the request cannot help. A ``Retry-After`` longer than
    ``max_retry_after`` or than the time left also ends the call at once, with a
    retryable error: asking again sooner than the server said is what gets a sender
    blocked, so the wait is left to the caller's own retry (Lambda's async retries).
    ``timeout`` bounds each attempt as a whole, not each socket read, and ``deadline``
    (a ``clock()`` value, e.g. from the Lambda's remaining time) bounds the attempts and
    the waits between them, so the call ends before the function would time out.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise DeliveryError("webhook URL is not an absolute http(s) URL", host=host)
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    # Built before the breaker is asked: a payload that cannot be serialised must not
    # claim (and then never release) the breaker's half-open trial.
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
    if breaker is not None and not breaker.allow():
        raise CircuitOpenError(
            f"delivery to {host} skipped: circuit open after "
            f"{breaker.consecutive_failures} consecutive failed deliveries; "
            f"next attempt allowed in {breaker.remaining_cooldown():.0f}s",
            host=host,
            retryable=True,
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
                    breaker.record_success()  # it answered: the failure is not an outage
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
            if outcome.retry_after is not None and outcome.retry_after > max_retry_after:
                problem += (
                    f"; the server asked to wait {outcome.retry_after:.0f}s, longer than the "
                    f"{max_retry_after:.0f}s cap: left to the caller's retry"
                )
                break
            delay = (
                outcome.retry_after
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
        retry_after=outcome.retry_after,
    )


def _read_quietly(response: Any) -> bytes:
    """Up to ``_MAX_BODY_BYTES`` of a body; what arrived, or nothing, if reading fails."""
    try:
        return bytes(response.read(_MAX_BODY_BYTES))
    except (OSError, http.client.HTTPException):
        return b""
