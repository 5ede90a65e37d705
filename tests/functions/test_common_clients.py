"""Specification of opskit_common.clients: one client per service and retry setting."""

from __future__ import annotations

from opskit_common import clients


def test_a_client_is_made_once_and_reused(aws_environment: str) -> None:
    first = clients.client("ec2")
    assert clients.client("ec2") is first
    assert first.meta.config.retries["mode"] == "standard"


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
