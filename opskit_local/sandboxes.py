"""Where a local handler runs: like Lambda, one request at a time in each sandbox.

`InProcess` imports the handler into this process and lets requests in one at a time:
a Lambda handler may keep per-request state in module globals (Powertools' event
handler does), because Lambda never runs two requests in one sandbox at once.
`Processes` starts several sandboxes, each a process of its own with the handler
imported, so concurrent requests run in parallel, as they do across Lambda sandboxes.
Each invocation carries this process's environment at the time of the request.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

Result = Mapping[str, Any]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers read."""

    function_name: str = "local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:local"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def integration_failure() -> dict[str, Any]:
    """What API Gateway answers when the function raises: 502 and this message."""
    return {
        "statusCode": 502,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": "Internal server error"}),
    }


def _invoke(handler: Callable[[Any, Any], Result], event: dict[str, Any]) -> Result:
    try:
        return handler(event, LambdaContext())
    except Exception:
        traceback.print_exc()
        return integration_failure()


class Sandboxes(Protocol):
    def invoke(self, event: dict[str, Any]) -> Result: ...

    def close(self) -> None: ...


class InProcess:
    """One sandbox: the handler in this process, one request at a time."""

    def __init__(self, handler: Callable[[Any, Any], Result]) -> None:
        self._handler = handler
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Result:
        with self._lock:
            return _invoke(self._handler, event)

    def close(self) -> None:
        """Nothing to stop."""


def _sandbox(connection: Connection, function: str, module: str) -> None:
    from opskit_local.functions import load_function

    handler = load_function(function, module).lambda_handler
    connection.send("ready")
    while True:
        message = connection.recv()
        if message is None:
            return
        environment, event = message
        os.environ.clear()
        os.environ.update(environment)
        connection.send(_invoke(handler, event))


class Processes:
    """``count`` sandboxes, each a process running ``opskit/functions/<function>/<module>.py``."""

    def __init__(self, function: str, module: str, *, count: int) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._idle: queue.Queue[tuple[Any, Connection]] = queue.Queue()
        started = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_sandbox, args=(theirs, function, module), daemon=True)
            process.start()
            started.append((process, mine))
        for process, connection in started:
            if connection.recv() != "ready":
                raise RuntimeError(f"sandbox {process.pid} did not start")
            self._idle.put((process, connection))
        self._all = started

    def invoke(self, event: dict[str, Any]) -> Result:
        process, connection = self._idle.get()
        try:
            connection.send((dict(os.environ), event))
            result: Result = connection.recv()
            return result
        finally:
            self._idle.put((process, connection))

    def close(self) -> None:
        for process, connection in self._all:
            with contextlib.suppress(OSError):
                connection.send(None)
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
