"""A handler run in this process the way Lambda runs it, its output like `sam local invoke`'s.

Lambda puts the function's folder and its layers on ``sys.path`` (here: the repository's
``opskit_common``, and Powertools from this Python's packages, a development dependency),
sets the function's variables and its own (``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_LAMBDA_LOG_LEVEL`` ...), and captures what the code writes. Here the handler's
output and its Python logging (AWS SDK debug lines left out) go to the log stream,
between ``START`` and ``END``/``REPORT`` lines; the return value, or Lambda's error object
when the handler raises, is the result. The function's timeout is what
``get_remaining_time_in_millis`` counts down from; it is not enforced.

A `Sandbox` loads the module once and keeps it, like a warm Lambda sandbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TextIO

from opskit_local.catalog import LocalFunction
from opskit_local.functions import load_function

QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "moto", "werkzeug")
"""Their debug lines (the AWS SDK's, and moto's when it runs in this process) would bury
the function's own; WARNING and above still show."""


@dataclass
class LocalContext:
    """Lambda's context object: what handlers read, the remaining time counting down."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.started + self.timeout_seconds - time.monotonic()
        return max(0, int(left * 1000))


@dataclass(frozen=True)
class Invocation:
    """One invocation's outcome."""

    request_id: str
    result: Any
    """The handler's return value, or Lambda's error object (errorMessage, errorType...)."""
    error: str | None
    """``Unhandled`` when the handler raised (Lambda's X-Amz-Function-Error), else None."""
    duration_ms: float
    init_ms: float | None
    """Time to import the handler on a cold start; None when the sandbox was warm."""

    @property
    def payload(self) -> bytes:
        return json.dumps(self.result).encode("utf-8")


class _LambdaJsonFormatter(logging.Formatter):
    """Lambda's JSON log format for Python's logging module."""

    request_id = ""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": self.request_id,
        }
        if record.exc_info:
            line["stackTrace"] = traceback.format_exception(*record.exc_info)
        return json.dumps(line)


class _CurrentLog:
    """The stream of the invocation under way; writes outside an invocation are dropped."""

    target: TextIO | None = None

    def write(self, text: str) -> int:
        return self.target.write(text) if self.target is not None else len(text)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()


_FORMATTER = _LambdaJsonFormatter()
_CURRENT_LOG = _CurrentLog()
_ROOT_HANDLER: logging.Handler | None = None


@contextlib.contextmanager
def overlay(variables: Mapping[str, str | None]) -> Iterator[None]:
    """Sets (or, for None, removes) environment variables, and puts them back afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _logging_to(stream: TextIO, level: str | None) -> Iterator[None]:
    """Python logging into `stream` at the function's level, as Lambda's runtime sets it up.

    Like Lambda's, the root handler is there before any handler module is imported and
    stays: Powertools' Logger attaches its filter against duplicate lines to it.
    """
    global _ROOT_HANDLER
    root = logging.getLogger()
    if _ROOT_HANDLER is None:
        _ROOT_HANDLER = logging.StreamHandler(_CURRENT_LOG)  # type: ignore[arg-type]
        _ROOT_HANDLER.setFormatter(_FORMATTER)
        root.addHandler(_ROOT_HANDLER)
    saved = (
        _CURRENT_LOG.target,
        root.level,
        {name: logging.getLogger(name).level for name in QUIET_LOGGERS},
    )
    _CURRENT_LOG.target = stream
    root.setLevel(getattr(logging, (level or "WARNING").upper(), logging.WARNING))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        _CURRENT_LOG.target = saved[0]
        root.setLevel(saved[1])
        for name, quiet in saved[2].items():
            logging.getLogger(name).setLevel(quiet)


class Sandbox:
    """One function, its module loaded on the first invocation and kept."""

    def __init__(
        self,
        function: LocalFunction,
        environment: Mapping[str, str | None],
        *,
        function_name: str,
        function_arn: str,
        log: TextIO,
    ) -> None:
        self.function = function
        self.function_name = function_name
        self.function_arn = function_arn
        self.log = log
        self.environment: dict[str, str | None] = {
            **environment,
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "LAMBDA_TASK_ROOT": str(function.folder),
            "_HANDLER": function.handler,
        }
        if function.log_level:
            self.environment["AWS_LAMBDA_LOG_LEVEL"] = function.log_level
            self.environment["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        self._module: ModuleType | None = None

    def invoke(self, event: Any) -> Invocation:
        context = LocalContext(
            function_name=self.function_name,
            memory_limit_in_mb=self.function.memory_mb,
            invoked_function_arn=self.function_arn,
            timeout_seconds=self.function.timeout_seconds,
        )
        request_id = context.aws_request_id
        outer_request_id, _FORMATTER.request_id = _FORMATTER.request_id, request_id
        print(f"START RequestId: {request_id} Version: $LATEST", file=self.log, flush=True)
        init_ms = None
        with (
            overlay(self.environment),
            contextlib.redirect_stdout(self.log),
            _logging_to(self.log, self.function.log_level),
        ):
            started = time.perf_counter()
            try:
                if self._module is None:
                    self._module = load_function(self.function.folder.name, self.function.module)
                    init_ms = (time.perf_counter() - started) * 1000
                    context.started = time.monotonic()
                    started = time.perf_counter()
                handler = getattr(self._module, self.function.attribute)
                result, error = handler(event, context), None
                json.dumps(result)
            except Exception as raised:
                result, error = self._error(raised, request_id), "Unhandled"
            duration_ms = (time.perf_counter() - started) * 1000
        _FORMATTER.request_id = outer_request_id  # an invocation this one made has ended
        print(f"END RequestId: {request_id}", file=self.log)
        init = f"\tInit Duration: {init_ms:.2f} ms" if init_ms is not None else ""
        print(
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Memory Size: {self.function.memory_mb} MB{init}",
            file=self.log,
            flush=True,
        )
        return Invocation(request_id, result, error, duration_ms, init_ms)

    def _error(self, raised: Exception, request_id: str) -> dict[str, Any]:
        """Lambda's error object, after the traceback Lambda would log (from the handler on)."""
        frames = raised.__traceback__.tb_next if raised.__traceback__ else None
        trace = traceback.format_exception(type(raised), raised, frames)
        print("".join(trace).rstrip(), file=self.log)
        return {
            "errorMessage": str(raised),
            "errorType": type(raised).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_list(traceback.extract_tb(frames)),
        }
