"""Specification of opskit_common.http: webhook delivery with retries and a circuit breaker.

Runs against a real HTTP server on 127.0.0.1 (``WebhookServer``) that can be scripted to
answer like Slack or Teams would: 200, 429 with Retry-After, 5xx, 4xx, slowly, a byte at a
time, and over TLS with a certificate made for the test.
"""

from __future__ import annotations

import logging
import ssl
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from urllib.error import URLError

import pytest
from opskit_common import http
from opskit_common.http import (
    CircuitBreaker,
    CircuitOpenError,
    DeliveryError,
    backoff_delay,
    parse_retry_after,
    post_json,
)

from tests.functions.stand_ins import (
    Reply,
    Sleeps,
    WebhookServer,
    ca_signed_tls,
    closed_port,
    self_signed_tls,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def closed_port_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/services/T000/B000/T0KENclosed"


# --- delivery -------------------------------------------------------------------------


def test_given_healthy_webhook_when_posting_then_payload_arrives_as_json(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    response = post_json(webhook.url, {"text": "héllo"}, sleep=sleeps)

    assert (response.status, response.body, response.attempts) == (200, b"ok", 1)
    [received] = webhook.requests
    assert received.path == f"/services/T000/B000/{webhook.token}"
    assert received.headers["Content-Type"] == "application/json; charset=utf-8"
    assert received.json() == {"text": "héllo"}
    assert sleeps == []


def test_given_429_with_retry_after_when_posting_then_it_waits_that_long_and_retries(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.script(Reply(429, b"rate_limited", {"Retry-After": "2"}))

    response = post_json(webhook.url, {"text": "x"}, sleep=sleeps)

    assert response.attempts == 2
    assert len(webhook.requests) == 2
    assert sleeps == [2.0]


def test_given_retry_after_longer_than_the_cap_then_it_stops_at_once_with_a_retryable_error(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """Sending again while still rate-limited is what gets a Slack app disabled."""
    webhook.default = Reply(429, b"rate_limited", {"Retry-After": "30"})

    with pytest.raises(DeliveryError) as error:
        post_json(webhook.url, {}, attempts=3, max_retry_after=10, sleep=sleeps)

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert (error.value.status, error.value.attempts, error.value.retry_after) == (429, 1, 30.0)
    assert error.value.retryable
    assert str(error.value) == (
        "delivery to 127.0.0.1 failed after 1 attempt(s): HTTP 429: rate_limited; the server "
        "asked to wait 30s, longer than the 10s cap: left to the caller's retry"
    )


def test_given_retry_after_as_an_http_date_beyond_the_cap_then_it_stops_at_once_too(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    in_ten_minutes = formatdate(time.time() + 600, usegmt=True)
    webhook.default = Reply(503, headers={"Retry-After": in_ten_minutes})

    with pytest.raises(DeliveryError, match="longer than the 10s cap") as error:
        post_json(webhook.url, {}, attempts=3, max_retry_after=10, sleep=sleeps)

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert error.value.retryable
    assert error.value.retry_after == pytest.approx(600, abs=5)


def test_given_retry_after_within_the_cap_but_beyond_the_time_left_then_it_stops_at_once(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    clock = FakeClock()
    webhook.default = Reply(429, headers={"Retry-After": "8"})

    with pytest.raises(DeliveryError, match=r"no time left to wait 8\.0s") as error:
        post_json(
            webhook.url, {}, max_retry_after=10, deadline=clock.now + 5, clock=clock, sleep=sleeps
        )

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert error.value.retryable


def test_given_5xx_without_retry_after_then_retries_back_off_exponentially_with_jitter(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.script(Reply(500), Reply(502), Reply(504))

    response = post_json(
        webhook.url, {}, attempts=4, backoff_base=0.5, sleep=sleeps, rng=lambda: 1.0
    )

    assert response.attempts == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_backoff_delay_is_between_half_and_all_of_the_exponential_ceiling() -> None:
    assert backoff_delay(3, base=0.5, maximum=8, rng=lambda: 0.0) == 1.0
    assert backoff_delay(3, base=0.5, maximum=8, rng=lambda: 1.0) == 2.0
    assert backoff_delay(10, base=0.5, maximum=8, rng=lambda: 1.0) == 8.0


def test_given_persistent_5xx_then_delivery_error_after_all_attempts(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.default = Reply(500, b"internal error")

    with pytest.raises(DeliveryError) as error:
        post_json(webhook.url, {}, attempts=3, sleep=sleeps)

    assert len(webhook.requests) == 3
    assert len(sleeps) == 2
    assert (error.value.status, error.value.attempts, error.value.retryable) == (500, 3, True)
    assert str(error.value) == (
        "delivery to 127.0.0.1 failed after 3 attempt(s): HTTP 500: internal error"
    )


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_given_client_error_then_it_is_not_retried(
    webhook: WebhookServer, sleeps: Sleeps, status: int
) -> None:
    webhook.default = Reply(status, b"invalid_payload")

    with pytest.raises(DeliveryError) as error:
        post_json(webhook.url, {}, sleep=sleeps)

    assert len(webhook.requests) == 1
    assert sleeps == []
    assert error.value.status == status
    assert not error.value.retryable
    assert str(error.value) == (
        f"delivery to 127.0.0.1 rejected with HTTP {status}: invalid_payload; not retried"
    )


def test_given_redirect_then_it_is_not_followed_and_not_retried(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.default = Reply(302, b"", {"Location": "http://127.0.0.1:9/elsewhere"})

    with pytest.raises(DeliveryError, match="HTTP 302") as error:
        post_json(webhook.url, {}, sleep=sleeps)

    assert len(webhook.requests) == 1
    assert error.value.status == 302


def test_given_unreachable_host_then_connection_errors_are_retried_then_reported(
    sleeps: Sleeps,
) -> None:
    with pytest.raises(DeliveryError) as error:
        post_json(closed_port_url(), {}, attempts=2, sleep=sleeps)

    assert len(sleeps) == 1
    assert error.value.status is None
    assert "connection error (ConnectionRefusedError)" in str(error.value)


def test_given_slow_webhook_then_attempt_times_out_and_is_retried(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.script(Reply(delay=2.0))

    response = post_json(webhook.url, {}, timeout=1.0, sleep=sleeps)

    assert response.attempts == 2
    assert len(sleeps) == 1


def test_given_slow_webhook_every_time_then_error_says_timed_out(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.default = Reply(delay=0.2)

    with pytest.raises(DeliveryError, match="timed out"):
        post_json(webhook.url, {}, timeout=0.05, attempts=2, sleep=sleeps)


def test_given_deadline_too_close_for_the_next_wait_then_it_stops_retrying_early(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    clock = FakeClock()
    webhook.default = Reply(429, headers={"Retry-After": "5"})

    with pytest.raises(DeliveryError, match=r"no time left to wait 5\.0s") as error:
        post_json(webhook.url, {}, attempts=5, deadline=clock.now + 3, clock=clock, sleep=sleeps)

    assert error.value.attempts == 1
    assert sleeps == []


# --- the deadline bounds the whole exchange ---------------------------------------------


def test_given_a_server_that_trickles_its_headers_then_the_call_ends_at_the_deadline(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """Each byte arrives well within the socket timeout; only a total bound can stop this."""
    webhook.default = Reply(200, b"ok", trickle=0.1, trickle_headers=True)  # ~4.7 s in all
    started = time.monotonic()

    with pytest.raises(DeliveryError, match=r"failed after 1 attempt\(s\): timed out") as error:
        post_json(webhook.url, {}, timeout=5, attempts=1, deadline=started + 1.0, sleep=sleeps)

    assert time.monotonic() - started < 3.0
    assert error.value.retryable
    assert len(webhook.requests) == 1


def test_given_a_server_that_trickles_a_2xx_body_then_the_call_ends_at_the_deadline_delivered(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """The status line says the message was accepted; posting it again would duplicate it."""
    webhook.default = Reply(200, b"o" * 60, trickle=0.1)  # 6 s in all
    started = time.monotonic()

    response = post_json(webhook.url, {}, timeout=5, deadline=started + 1.0, sleep=sleeps)

    assert time.monotonic() - started < 3.0
    assert (response.status, response.attempts) == (200, 1)
    assert len(webhook.requests) == 1


def test_given_no_deadline_then_the_attempt_timeout_bounds_the_whole_exchange(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    webhook.default = Reply(500, b"x" * 20, trickle=0.1, trickle_headers=True)  # ~6 s each
    started = time.monotonic()

    with pytest.raises(DeliveryError, match="timed out"):
        post_json(webhook.url, {}, timeout=0.5, attempts=2, sleep=sleeps)

    assert time.monotonic() - started < 3.0
    assert len(webhook.requests) == 2
    assert len(sleeps) == 1


def test_over_tls_the_certificate_is_checked_and_the_deadline_bounds_a_trickling_server(
    sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_tls, trusting_client = self_signed_tls()
    server = WebhookServer(tls=server_tls).start()
    try:
        # GIVEN a certificate no public authority signed: refused at once, with the reason
        with pytest.raises(DeliveryError) as refused:
            post_json(server.url, {}, attempts=3, sleep=sleeps)
        assert "untrusted certificate (self-signed certificate); not retried" in str(refused.value)
        assert (refused.value.attempts, sleeps) == (1, [])

        # WHEN the client trusts it THEN the message is delivered over TLS
        monkeypatch.setattr("opskit_common.http._tls_context", lambda: trusting_client)
        assert post_json(server.url, {"text": "x"}, sleep=sleeps).status == 200
        assert server.requests[-1].json() == {"text": "x"}

        # AND a server that trickles inside TLS is cut off at the deadline
        server.default = Reply(200, b"ok", trickle=0.1, trickle_headers=True)  # ~4.7 s
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="timed out"):
            post_json(server.url, {}, attempts=1, deadline=started + 1.0, sleep=sleeps)
        assert time.monotonic() - started < 3.0
    finally:
        server.stop()


@pytest.fixture
def trusted_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A CA file the production TLS context loads, as Lambda's loads the system bundle."""
    ca_file = tmp_path / "ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    http._tls_context.cache_clear()
    yield ca_file
    http._tls_context.cache_clear()


@pytest.mark.parametrize("ca_key_usage", [True, False], ids=["well-formed", "ca-without-key-usage"])
def test_certificates_are_checked_as_strictly_as_the_running_python_checks_them(
    ca_key_usage: bool, trusted_ca: Path, sleeps: Sleeps
) -> None:
    """Python 3.13 made X.509 checks strict, and Lambda runs 3.14: a chain that breaks
    RFC 5280 (here a CA without the key-usage extension) is refused there, as the README
    warns, though 3.11 and 3.12 accept it. A well-formed chain passes on every version."""
    server_tls, ca_pem = ca_signed_tls(ca_key_usage=ca_key_usage)
    trusted_ca.write_bytes(ca_pem)
    server = WebhookServer(tls=server_tls).start()
    try:
        if ca_key_usage or sys.version_info < (3, 13):
            assert post_json(server.url, {"text": "x"}, sleep=sleeps).status == 200
        else:
            with pytest.raises(DeliveryError, match="CA cert does not include key usage"):
                post_json(server.url, {"text": "x"}, sleep=sleeps)
            assert server.requests == []
    finally:
        server.stop()


def openssl_error(reason: str) -> ssl.SSLError:
    """An SSLError as the ssl module raises it: with OpenSSL's `library` and `reason` set."""
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower().replace('_', ' ')}")
    error.library, error.reason = "SSL", reason
    return error


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (openssl_error("BAD_RECORD_MAC"), "connection error (SSLError)"),
        (URLError(ConnectionResetError()), "connection error (ConnectionResetError)"),
        (URLError(TimeoutError()), "timed out"),
        (
            ssl.SSLCertVerificationError("raised by Python code"),
            "an untrusted certificate (unverified)",
        ),
    ],
    ids=[
        "unwrapped-tls-error",
        "wrapped-reset",
        "wrapped-timeout",
        "certificate-error-without-details",
    ],
)
def test_a_failed_attempt_is_described_by_the_errors_type_or_the_certificates_reason(
    error: OSError, problem: str
) -> None:
    """An error's text may carry the URL, so only its type is named, or OpenSSL's reason for
    refusing a certificate (which names the host at most). A TLS error urllib did not wrap,
    or a certificate error without OpenSSL's details, is described like any other."""
    assert http._transport_failure(error).problem == problem


@pytest.mark.parametrize("url", ["ftp://host/x", "hooks.slack.com/services/T/B/X", "http:///x"])
def test_given_url_that_is_not_absolute_http_then_error_does_not_echo_it(url: str) -> None:
    with pytest.raises(DeliveryError) as error:
        post_json(url, {})
    assert str(error.value) == "webhook URL is not an absolute http(s) URL"


# --- secrecy of the URL -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500),
        Reply(404, b"no_service"),
        Reply(400),  # body replaced below by one echoing the URL
        Reply(429, headers={"Retry-After": "1"}),
    ],
)
def test_given_any_failure_then_neither_error_nor_logs_contain_the_url(
    webhook: WebhookServer, sleeps: Sleeps, caplog: pytest.LogCaptureFixture, reply: Reply
) -> None:
    caplog.set_level(logging.DEBUG)
    if reply.status == 400:
        reply.body = f"bad request to {webhook.url}".encode()
    webhook.default = reply

    with pytest.raises(DeliveryError) as error:
        post_json(webhook.url, {}, sleep=sleeps)

    for text in (str(error.value), repr(error.value), caplog.text, repr(caplog.records)):
        assert webhook.token not in text
        assert "/services/" not in text
    assert error.value.__cause__ is None


def test_given_unreachable_host_then_error_does_not_contain_the_url(sleeps: Sleeps) -> None:
    url = closed_port_url()
    with pytest.raises(DeliveryError) as error:
        post_json(url, {}, attempts=1, sleep=sleeps)
    assert "T0KENclosed" not in str(error.value)
    assert error.value.__cause__ is None


def test_retry_warnings_name_the_host_only(
    webhook: WebhookServer, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.script(Reply(503, b"unavailable"))
    with caplog.at_level(logging.WARNING, logger="opskit_common.http"):
        post_json(webhook.url, {}, sleep=sleeps)

    [record] = caplog.records
    assert record.getMessage() == "Webhook delivery attempt failed; retrying"
    fields = {key: getattr(record, key, None) for key in ("host", "attempt", "problem")}
    assert fields == {"host": "127.0.0.1", "attempt": 1, "problem": "HTTP 503: unavailable"}
    assert webhook.token not in caplog.text


# --- Retry-After parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 25 Nov 2026 10:00:30 GMT", 30.0),
        ("Wed, 25 Nov 2026 09:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_accepts_delay_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    now = 1795600800.0  # 2026-11-25T10:00:00Z
    assert parse_retry_after(header, now=lambda: now) == seconds


# --- circuit breaker --------------------------------------------------------------------


def test_given_threshold_failed_deliveries_then_breaker_opens_and_fails_fast_without_a_request(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=30, clock=clock)
    webhook.default = Reply(500)

    for _ in range(2):
        with pytest.raises(DeliveryError):
            post_json(webhook.url, {}, attempts=2, breaker=breaker, sleep=sleeps)
    assert breaker.state == CircuitBreaker.OPEN
    requests_so_far = len(webhook.requests)

    clock.now += 10
    with pytest.raises(CircuitOpenError) as error:
        post_json(webhook.url, {}, breaker=breaker, sleep=sleeps)

    assert len(webhook.requests) == requests_so_far == 4
    assert str(error.value) == (
        "delivery to 127.0.0.1 skipped: circuit open after 2 consecutive failed deliveries; "
        "next attempt allowed in 20s"
    )
    assert isinstance(error.value, DeliveryError)
    assert error.value.retryable, "the event must come back once the circuit may close"


def test_given_open_breaker_after_cooldown_then_one_trial_is_let_through_and_success_closes_it(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=30, clock=clock)
    webhook.script(Reply(500))
    with pytest.raises(DeliveryError):
        post_json(webhook.url, {}, attempts=1, breaker=breaker, sleep=sleeps)

    clock.now += 30
    assert breaker.state == CircuitBreaker.HALF_OPEN
    post_json(webhook.url, {}, breaker=breaker, sleep=sleeps)

    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.remaining_cooldown() == 0


def test_given_half_open_breaker_when_trial_fails_then_it_opens_again_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=30, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 31

    assert breaker.allow()
    assert not breaker.allow(), "only one trial at a time while half-open"
    breaker.record_failure()

    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.remaining_cooldown() == 30


def half_open_breaker() -> tuple[CircuitBreaker, FakeClock]:
    """A breaker one failure opened 30 s ago: its cooldown just ended."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=30, clock=clock)
    breaker.record_failure()
    clock.now += 30
    assert breaker.state == CircuitBreaker.HALF_OPEN
    return breaker, clock


def test_given_half_open_breaker_when_the_payload_cannot_be_serialised_then_the_trial_is_freed(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """Otherwise the breaker stays open for the life of the sandbox: no trial ever ends."""
    breaker, _ = half_open_breaker()

    with pytest.raises(TypeError):
        post_json(webhook.url, {"when": object()}, breaker=breaker, sleep=sleeps)
    assert webhook.requests == []

    post_json(webhook.url, {"text": "next event"}, breaker=breaker, sleep=sleeps)

    assert breaker.state == CircuitBreaker.CLOSED
    assert len(webhook.requests) == 1


def test_given_half_open_breaker_when_the_attempt_itself_raises_then_the_trial_ends_as_a_failure(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """A header http.client refuses raises mid-attempt (ValueError): the trial must still end."""
    breaker, clock = half_open_breaker()

    with pytest.raises(ValueError, match="header"):
        post_json(webhook.url, {}, headers={"X-Trace": "a\nb"}, breaker=breaker, sleep=sleeps)

    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.remaining_cooldown() == 30
    clock.now += 30
    post_json(webhook.url, {"text": "next event"}, breaker=breaker, sleep=sleeps)
    assert breaker.state == CircuitBreaker.CLOSED
    assert len(webhook.requests) == 1


def test_given_a_huge_response_body_then_only_its_first_64_kib_are_read(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """A webhook cannot make the sandbox buffer an arbitrary amount of memory."""
    webhook.default = Reply(200, b"x" * (1024 * 1024))

    response = post_json(webhook.url, {}, sleep=sleeps)

    assert response.status == 200
    assert len(response.body) == 64 * 1024


def test_given_success_between_failures_then_the_count_restarts() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.CLOSED


def test_given_client_errors_then_they_do_not_open_the_breaker(
    webhook: WebhookServer, sleeps: Sleeps
) -> None:
    """A 4xx proves the destination is up: the request is wrong, not the destination."""
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    webhook.default = Reply(400)
    for _ in range(3):
        with pytest.raises(DeliveryError):
            post_json(webhook.url, {}, breaker=breaker, sleep=sleeps)
    assert breaker.state == CircuitBreaker.CLOSED
    assert len(webhook.requests) == 3
