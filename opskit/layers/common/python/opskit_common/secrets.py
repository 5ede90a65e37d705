"""Secrets Manager values cached in memory across invocations.

Fetching a secret on every invocation adds latency and cost and turns a Secrets
Manager throttle into a failed delivery. Values are kept for a TTL so that a rotated
secret is picked up within minutes without redeploying.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from opskit_common.clients import client as _default_client
from opskit_common.config import ConfigurationError

DEFAULT_TTL_SECONDS = 300.0

_cache: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


class SecretError(ConfigurationError):
    """The secret cannot be read or has no string value. The message never contains the value."""


def get_secret_string(
    secret_id: str,
    *,
    client: Any | None = None,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The SecretString of ``secret_id`` (name or ARN), served from cache while fresh."""
    now = clock()
    with _lock:
        cached = _cache.get(secret_id)
    if cached is not None and now < cached[1]:
        return cached[0]

    secretsmanager = client if client is not None else _default_client("secretsmanager")
    try:
        response = secretsmanager.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise SecretError(f"cannot read secret {secret_id}: {code}") from exc
    except BotoCoreError as exc:
        raise SecretError(f"cannot read secret {secret_id}: {type(exc).__name__}") from exc

    value = response.get("SecretString")
    if not isinstance(value, str):
        raise SecretError(
            f"secret {secret_id} has no SecretString (binary secrets are not supported)"
        )
    with _lock:
        _cache[secret_id] = (value, now + ttl_seconds)
    return value


def forget(secret_id: str) -> None:
    """Drop the cached value of ``secret_id``, so the next read goes to Secrets Manager.

    For a caller whose value was just refused (a revoked webhook URL, say): the secret may
    have been rotated since it was cached, and the TTL would hide that for minutes.
    """
    with _lock:
        _cache.pop(secret_id, None)


def clear_cache() -> None:
    """Forget every cached secret value."""
    with _lock:
        _cache.clear()
