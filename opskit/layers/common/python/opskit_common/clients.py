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

_CONFIG = Config(
    connect_timeout=5,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
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


def reset_clients() -> None:
    """Forget every cached client (tests that change endpoints or credentials)."""
    with _lock:
        _clients.clear()
