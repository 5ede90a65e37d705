"""The event of a local invocation: inline JSON, a file, or a sample from ``events/<function>/``.

Samples are named by file (``events/notification/pipeline-failed.json``); ``EVENT`` may give
a sample by its name alone (``pipeline-failed``). Without ``EVENT`` the function's first
sample, in file-name order, is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opskit_local.errors import LocalError
from opskit_local.functions import REPO

EVENTS_DIR = REPO / "events"


def samples(function: str) -> list[Path]:
    """The sample events of `function` (``notification``, ``user_service.api``)."""
    return sorted((EVENTS_DIR / function).glob("*.json"))


def read_event(spec: str | None, function: str) -> tuple[Any, str]:
    """The event, and where it came from (for the log)."""
    if spec is not None and spec.lstrip().startswith(("{", "[")):
        try:
            return json.loads(spec), "inline JSON"
        except json.JSONDecodeError as error:
            raise LocalError(f"EVENT is not JSON: {_reason(error)}") from None
    path = _path(spec, function)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise LocalError(f"event file {path} cannot be read: {error.strerror}") from None
    try:
        return json.loads(text), str(_shown(path))
    except json.JSONDecodeError as error:
        raise LocalError(f"event file {_shown(path)} is not JSON: {_reason(error)}") from None


def _path(spec: str | None, function: str) -> Path:
    known = samples(function)
    listed = ", ".join(path.stem for path in known) or "none"
    if not spec:
        if not known:
            raise LocalError(
                f"function {function!r} has no sample events in events/{function}/; "
                "give EVENT=<file or inline JSON>"
            )
        return known[0]
    given = Path(spec).expanduser()
    for candidate in (given, EVENTS_DIR / function / spec, EVENTS_DIR / function / f"{spec}.json"):
        if candidate.is_file():
            return candidate
    raise LocalError(
        f"event file {spec} does not exist, nor is it a sample of {function} ({listed})"
    )


def _shown(path: Path) -> Path:
    try:
        return path.resolve().relative_to(REPO)
    except ValueError:
        return path


def _reason(error: json.JSONDecodeError) -> str:
    return f"{error.msg} at line {error.lineno} column {error.colno}"
