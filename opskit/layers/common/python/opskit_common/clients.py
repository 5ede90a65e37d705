"""boto3 clients created on first use and reused across invocations of a warm sandbox.

Creating a client costs tens of milliseconds, so each is built once per process and
only when a code path needs it (a malformed event never pays for one). boto3 honours
``AWS_ENDPOINT_URL`` itself, so the same code talks to AWS or to a local emulator.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 10
MAX_BACKOFF_SECONDS = 20
"""botocore's cap on the wait between two attempts (standard and adaptive modes)."""
ADAPTIVE_WAIT_SECONDS = 2
"""The longest an adaptive client waits for a send token: one token at its lowest rate, 0.5/s."""

_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_SECONDS,
    read_timeout=READ_TIMEOUT_SECONDS,
    user_agent_extra="cdk-opskit",
)

_clients: dict[tuple[str, str | None, str, int], Any] = {}
_lock = threading.Lock()


def _keep_sdk_debug_logs_off() -> None:
    """botocore logs whole response bodies (secret values included) at DEBUG.

    Lambda's JSON log format applies the function's log level to the root logger, so a
    function switched to DEBUG for troubleshooting would otherwise print its secrets.
    The SDK loggers get an explicit level, so later changes to the root level do not
    reach them; above DEBUG, they keep the level they would have had anyway.
    """
    for name in ("botocore", "boto3", "urllib3"):
        sdk_logger = logging.getLogger(name)
        if sdk_logger.level < logging.INFO:  # NOTSET (inherited) or DEBUG
            sdk_logger.setLevel(max(logging.INFO, sdk_logger.getEffectiveLevel()))


_keep_sdk_debug_logs_off()


def client(
    service_name: str,
    *,
    region_name: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 3,
) -> Any:
    """The process-wide client for ``service_name``, created on first call.

    A function that makes thousands of calls in one run (a cleanup over a whole account)
    asks for ``retry_mode="adaptive"``: botocore then also rate-limits the client itself
    once the service throttles, instead of only retrying. Each retry setting gets its own
    client; everything else is the common configuration.
    """
    key = (service_name, region_name, retry_mode, max_attempts)
    cached = _clients.get(key)
    if cached is not None:
        return cached
    with _lock:
        cached = _clients.get(key)
        if cached is None:
            _keep_sdk_debug_logs_off()
            retries = Config(retries={"mode": retry_mode, "max_attempts": max_attempts})
            cached = boto3.client(
                service_name, region_name=region_name, config=_CONFIG.merge(retries)
            )
            _clients[key] = cached
        return cached


def longest_call_seconds(*, retry_mode: str = "standard", max_attempts: int = 3) -> float:
    """The longest one call of a ``client(retry_mode=..., max_attempts=...)`` can take.

    Every attempt (``max_attempts`` retries after the first) waits its full connect and read
    timeout, and in adaptive mode for a send token too, with botocore's longest backoff,
    ``min(2 ** i, 20)`` seconds, between attempts. A function that stops starting calls
    before its timeout keeps at least this free for the last call it started.
    """
    attempts = max_attempts + 1
    per_attempt = CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS
    if retry_mode == "adaptive":
        per_attempt += ADAPTIVE_WAIT_SECONDS
    backoff = sum(min(2**retry, MAX_BACKOFF_SECONDS) for retry in range(attempts - 1))
    return float(attempts * per_attempt + backoff)


def reset_clients() -> None:
    """Forget every cached client (tests that change endpoints or credentials)."""
    with _lock:
        _clients.clear()
