"""Specification of opskit_common.clients: one client per service and retry setting."""

from __future__ import annotations

from typing import Any

from opskit_common import clients


class AlwaysThrottled:
    """Every error a throttling error: botocore then backs off the longest (1 s base)."""

    def is_throttling_error_from_context(self, context: Any) -> bool:
        return True


def test_a_client_is_made_once_and_reused(aws_environment: str) -> None:
    first = clients.client("ec2")
    assert clients.client("ec2") is first
    assert (first.meta.config.retries["mode"], first.meta.config.retries["total_max_attempts"]) == (
        "standard",
        4,
    )
    assert clients.longest_call_seconds() == clients.longest_call_seconds(
        retry_mode="standard", max_attempts=3
    ), "the defaults describe the default client"


def test_adaptive_retries_get_their_own_client_with_the_common_settings(
    aws_environment: str,
) -> None:
    standard = clients.client("ec2")
    adaptive = clients.client("ec2", retry_mode="adaptive", max_attempts=10)

    assert adaptive is not standard
    assert adaptive is clients.client("ec2", retry_mode="adaptive", max_attempts=10)
    config = adaptive.meta.config
    assert (config.retries["mode"], config.retries["total_max_attempts"]) == ("adaptive", 11)
    assert (config.connect_timeout, config.read_timeout) == (5, 10)
    assert "cdk-opskit" in config.user_agent_extra


def test_the_longest_call_covers_every_attempt_timing_out_and_the_longest_backoffs(
    aws_environment: str,
) -> None:
    """Derived from a real client's settings and botocore's own backoff at its largest draw."""
    from botocore.retries.standard import ExponentialBackoff, RetryContext

    for mode, retries in (("standard", 3), ("adaptive", 2), ("adaptive", 3)):
        config = clients.client("ec2", retry_mode=mode, max_attempts=retries).meta.config
        attempts = config.retries["total_max_attempts"]
        backoff = ExponentialBackoff(random=lambda: 1.0, throttling_detector=AlwaysThrottled())
        waits = sum(
            backoff.delay_amount(RetryContext(attempt_number=n)) for n in range(1, attempts)
        )
        token_waits = attempts * 2 if mode == "adaptive" else 0  # 1 token at 0.5/s
        expected = attempts * (config.connect_timeout + config.read_timeout) + waits + token_waits

        assert clients.longest_call_seconds(retry_mode=mode, max_attempts=retries) == expected
