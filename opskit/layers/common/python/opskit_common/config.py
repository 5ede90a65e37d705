"""Reading a function's configuration from its environment, failing with a clear message.

Configuration errors are deployment mistakes: they should name the variable and the
accepted values so the fix is obvious from the log line or the smoke-test failure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class ConfigurationError(RuntimeError):
    """The function is deployed with missing or invalid configuration."""


def require_env(name: str) -> str:
    """The non-empty value of environment variable ``name``."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def env_choice(name: str, choices: Sequence[str], *, default: str) -> str:
    """Environment variable ``name`` (case-insensitive) constrained to ``choices``."""
    raw = os.environ.get(name, "").strip()
    value = raw.lower() if raw else default
    if value not in choices:
        raise ConfigurationError(
            f"environment variable {name} has invalid value {raw!r}; "
            f"valid choices: {', '.join(choices)}"
        )
    return value


def env_int(name: str, *, default: int, minimum: int | None = None) -> int:
    """Environment variable ``name`` as a whole number of at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable {name} must be a whole number, got {raw!r}"
        ) from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, *, default: Sequence[str] = ()) -> tuple[str, ...]:
    """Comma-separated environment variable ``name`` as its non-empty, stripped items."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return tuple(default)
    return tuple(item.strip() for item in raw.split(",") if item.strip())
