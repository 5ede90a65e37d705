"""What a running `make local` tells `make invoke`: ``.opskit-local/running.json``.

Its emulator's endpoint, its webhook stand-in, the template it was started from, and every
function with its variables resolved against that emulator, so that an invocation needs
neither the template nor any AWS call to set itself up. Written when `make local` is ready,
removed when it stops; a file left by a process that died is ignored.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opskit_local.catalog import LocalFunction
from opskit_local.template import state_dir


def running_file() -> Path:
    return state_dir() / "running.json"


@dataclass(frozen=True)
class Deployed:
    """A function as the emulator has it: its physical name and resolved variables."""

    function: LocalFunction
    function_name: str
    environment: dict[str, str] | None
    problem: str | None = None
    """Why its variables could not be resolved; None when they were."""

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "function": asdict(self.function)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployed:
        return cls(**{**raw, "function": LocalFunction(**raw["function"])})


@dataclass(frozen=True)
class Running:
    pid: int
    environment: str
    source: str
    """Where its template came from: ``synth:<fingerprint>`` or ``file:<path>:<mtime>``."""
    region: str
    endpoint_url: str
    webhook_url: str
    lambda_url: str
    functions: list[Deployed]

    def write(self) -> None:
        path = running_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        document = {**asdict(self), "functions": [f.as_json() for f in self.functions]}
        partial.write_text(json.dumps(document, indent=1))
        os.replace(partial, path)

    def remove(self) -> None:
        path = running_file()
        try:
            if json.loads(path.read_text()).get("pid") == self.pid:
                path.unlink()
        except (OSError, ValueError):
            pass


def read() -> Running | None:
    """The running `make local`, or None when none runs."""
    try:
        raw = json.loads(running_file().read_text())
        running = Running(**{**raw, "functions": [Deployed.from_json(f) for f in raw["functions"]]})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return running if _alive(running.pid) and _answers(running.endpoint_url) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.5):
            return True
    except OSError:
        return False
