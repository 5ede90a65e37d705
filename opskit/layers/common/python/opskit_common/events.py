"""Reading fields out of incoming events, failing with a message that names the field.

A bare ``KeyError: 'execution-id'`` in a dead-letter queue tells nobody which event
shape was expected; these helpers say exactly what is missing or mistyped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_MISSING: Any = object()


class MalformedEventError(ValueError):
    """The event does not have the shape the handler needs; retrying will not help."""


def type_name(value: object) -> str:
    """How an error names a JSON value's type: `null` for None, else its Python type."""
    return "null" if value is None else type(value).__name__


def _lookup(event: Any, path: str) -> Any:
    """Value at dotted ``path`` or ``_MISSING``; raises if an intermediate is not an object."""
    if not isinstance(event, Mapping):
        raise MalformedEventError(f"event must be a JSON object, got {type_name(event)}")
    current: Any = event
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(current, Mapping):
            raise MalformedEventError(
                f"event field '{'.'.join(walked)}' must be an object, got {type_name(current)}"
            )
        walked.append(key)
        current = current.get(key, _MISSING)
        if current is _MISSING or current is None:
            return _MISSING
    return current


def require(event: Any, path: str) -> Any:
    """The value at dotted ``path`` (e.g. ``"detail.execution-id"``); null counts as missing."""
    value = _lookup(event, path)
    if value is _MISSING:
        raise MalformedEventError(f"event is missing required field '{path}'")
    return value


def require_str(event: Any, path: str) -> str:
    """Like :func:`require`, for a field that must be a non-empty string."""
    value = require(event, path)
    if not isinstance(value, str):
        raise MalformedEventError(f"event field '{path}' must be a string, got {type_name(value)}")
    if not value.strip():
        raise MalformedEventError(f"event field '{path}' must not be empty")
    return value


def optional(event: Any, path: str, default: Any = None) -> Any:
    """The value at dotted ``path``, or ``default`` when absent or null."""
    value = _lookup(event, path)
    return default if value is _MISSING else value


def is_smoke_test(event: Any) -> bool:
    """Whether ``event`` is ``{"opskit": {"smokeTest": true}}``: what the post-traffic hook of a
    deployment sends a new version that has no dry run of its own. It checks configuration
    and touches nothing."""
    marker = event.get("opskit") if isinstance(event, Mapping) else None
    return isinstance(marker, Mapping) and marker.get("smokeTest") is True


def optional_bool(event: Any, path: str, *, default: bool) -> bool:
    """A true/false field; absent or null gives ``default``. Strings are not guessed at."""
    value = optional(event, path, default)
    if not isinstance(value, bool):
        raise MalformedEventError(f"event field '{path}' must be true or false, got {value!r:.40}")
    return value


def optional_int(
    event: Any, path: str, *, default: int, minimum: int | None = None, maximum: int | None = None
) -> int:
    """A whole-number field within ``[minimum, maximum]``; absent or null gives ``default``."""
    value = optional(event, path, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEventError(
            f"event field '{path}' must be a whole number, got {type_name(value)}"
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{'' if minimum is None else minimum}..{'' if maximum is None else maximum}"
        raise MalformedEventError(f"event field '{path}' must be in {bounds}, got {value}")
    return value


def optional_choice(event: Any, path: str, choices: Sequence[str], *, default: str) -> str:
    """A string field that must be one of ``choices``; absent or null gives ``default``."""
    value = optional(event, path, default)
    if value not in choices:
        raise MalformedEventError(
            f"event field '{path}' has invalid value {value!r:.40}; "
            f"valid choices: {', '.join(choices)}"
        )
    return str(value)


def parse_timestamp(value: Any, *, field: str) -> datetime:
    """An ISO 8601 timestamp as a timezone-aware UTC datetime (naive input is taken as UTC)."""
    if not isinstance(value, str):
        raise MalformedEventError(
            f"event field '{field}' must be an ISO 8601 timestamp string, got {type_name(value)}"
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedEventError(
            f"event field '{field}' is not an ISO 8601 timestamp: {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
