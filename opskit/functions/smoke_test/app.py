"""CodeDeploy post-traffic hook: smoke-tests the alias under deployment and reports the verdict.

CodeDeploy invokes this function with ``{"DeploymentId": ..., "LifecycleEventHookExecutionId":
...}``. It invokes the target function's alias synchronously with a test event, judges the
response, and always reports ``Succeeded`` or ``Failed`` back to CodeDeploy, so that a broken
release rolls back at once instead of waiting for the hook to time out. A throttled invoke
(``TooManyRequestsException``, e.g. under reserved concurrency) says nothing about the release:
the target never ran, so it is retried after short waits while the hook has time for them.

Environment:
    TARGET_FUNCTION_NAME  name or ARN of the function under deployment (required)
    TARGET_QUALIFIER      the alias under deployment, e.g. ``PROD`` (required)
    TEST_EVENT            JSON payload to invoke the target with (default ``{}``)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

SUCCEEDED = "Succeeded"
FAILED = "Failed"

MAX_LOGGED_PAYLOAD_CHARS = 1_000
REPORT_RESERVE_SECONDS = 10.0
"""Time kept back from the invoke's read timeout so the verdict reaches CodeDeploy in time."""
THROTTLE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Waits before each retry of a throttled invoke."""
THROTTLE_RETRY_BUDGET_SECONDS = 10.0
"""Time kept back from the invoke's read timeout for those waits and the throttled calls."""

throttle_sleep: Callable[[float], None] = time.sleep  # replaced in tests
clock: Callable[[], float] = time.monotonic  # replaced in tests

_lambda_client: Any = None
_codedeploy_client: Any = None


class MalformedHookEventError(ValueError):
    """The event is not a CodeDeploy lifecycle hook event, so no verdict can be reported."""


class SmokeTestConfigError(ValueError):
    """The smoke test's own configuration (environment variables) is missing or invalid."""


@dataclass(frozen=True)
class HookExecution:
    """Identifies the CodeDeploy lifecycle hook execution the verdict belongs to."""

    deployment_id: str
    hook_execution_id: str

    @classmethod
    def from_event(cls, event: Any) -> HookExecution:
        if not isinstance(event, Mapping):
            raise MalformedHookEventError(
                "expected a CodeDeploy lifecycle hook event (an object), "
                f"got {type(event).__name__}"
            )
        values = {}
        for field in ("DeploymentId", "LifecycleEventHookExecutionId"):
            value = event.get(field)
            if not isinstance(value, str) or not value:
                raise MalformedHookEventError(
                    f"CodeDeploy lifecycle hook event has no {field}; cannot report a status"
                )
            values[field] = value
        return cls(values["DeploymentId"], values["LifecycleEventHookExecutionId"])


@dataclass(frozen=True)
class SmokeTarget:
    """What to invoke, and with which payload."""

    function_name: str
    qualifier: str
    payload: bytes

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SmokeTarget:
        function_name = environ.get("TARGET_FUNCTION_NAME", "").strip()
        qualifier = environ.get("TARGET_QUALIFIER", "").strip()
        for name, value in (
            ("TARGET_FUNCTION_NAME", function_name),
            ("TARGET_QUALIFIER", qualifier),
        ):
            if not value:
                raise SmokeTestConfigError(f"environment variable {name} is not set")
        raw_event = environ.get("TEST_EVENT", "").strip() or "{}"
        try:
            json.loads(raw_event)
        except json.JSONDecodeError as error:
            raise SmokeTestConfigError(f"TEST_EVENT is not valid JSON: {error}") from None
        return cls(function_name, qualifier, raw_event.encode("utf-8"))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str

    @property
    def status(self) -> str:
        return SUCCEEDED if self.passed else FAILED


def _truncate(text: str, limit: int = MAX_LOGGED_PAYLOAD_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _http_status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _is_throttle(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "TooManyRequestsException")


def _invoke(lambda_client: Any, target: SmokeTarget) -> dict[str, Any]:
    response: dict[str, Any] = lambda_client.invoke(
        FunctionName=target.function_name,
        InvocationType="RequestResponse",
        Qualifier=target.qualifier,
        Payload=target.payload,
    )
    return response


def invoke_retrying_throttles(
    lambda_client: Any,
    target: SmokeTarget,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The target's invoke response, retrying only throttling: then the target never ran.

    A retry is made only if, after its wait, a whole invoke (the client's read timeout)
    still ends before ``deadline`` (a ``clock()`` value), so the verdict is always reported.
    """
    read_timeout = float(lambda_client.meta.config.read_timeout)
    for delay in THROTTLE_RETRY_DELAYS:
        try:
            return _invoke(lambda_client, target)
        except ClientError as error:
            out_of_time = deadline is not None and clock() + delay + read_timeout > deadline
            if not _is_throttle(error) or out_of_time:
                raise
            logger.warning(
                "Invoke of %s:%s throttled; retrying in %.1fs",
                target.function_name,
                target.qualifier,
                delay,
            )
            sleep(delay)
    return _invoke(lambda_client, target)


def invoke_target(
    lambda_client: Any,
    target: SmokeTarget,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Invokes the target alias synchronously and judges its response.

    Raises whatever the invoke call raises (e.g. ``ClientError``); the caller reports it.
    """
    response = invoke_retrying_throttles(
        lambda_client, target, deadline=deadline, clock=clock, sleep=sleep
    )
    status_code = response.get("StatusCode")
    function_error = response.get("FunctionError")
    executed_version = response.get("ExecutedVersion")
    body = (
        response["Payload"].read().decode("utf-8", errors="replace")
        if "Payload" in response
        else ""
    )
    try:
        payload = json.loads(body) if body else None
    except json.JSONDecodeError:
        payload = None

    failure = None
    if function_error:
        error_type = payload.get("errorType") if isinstance(payload, dict) else None
        failure = f"function error {function_error}" + (f" ({error_type})" if error_type else "")
    elif not isinstance(status_code, int) or not 200 <= status_code < 300:
        failure = f"invoke returned StatusCode {status_code}"
    elif isinstance(payload, dict) and "statusCode" in payload:
        http_status = _http_status(payload["statusCode"])
        if http_status is None:
            failure = f"response statusCode {payload['statusCode']!r} is not an HTTP status"
        elif http_status >= 400:
            failure = f"response statusCode {http_status}"

    if failure:
        logger.error(
            "Smoke test of %s:%s failed: %s; payload: %s",
            target.function_name,
            target.qualifier,
            failure,
            _truncate(body),
            extra={"executed_version": executed_version, "function_error": function_error},
        )
        return Verdict(False, failure)
    logger.info(
        "Smoke test of %s:%s passed (version %s)",
        target.function_name,
        target.qualifier,
        executed_version,
    )
    return Verdict(True, f"invoke returned StatusCode {status_code}")


def report_status(codedeploy_client: Any, hook: HookExecution, status: str) -> None:
    codedeploy_client.put_lifecycle_event_hook_execution_status(
        deploymentId=hook.deployment_id,
        lifecycleEventHookExecutionId=hook.hook_execution_id,
        status=status,
    )
    logger.info("Reported %s to CodeDeploy for deployment %s", status, hook.deployment_id)


def run_smoke_test(
    lambda_client: Any,
    codedeploy_client: Any,
    hook: HookExecution,
    environ: Mapping[str, str],
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Runs the smoke test and always reports its verdict for `hook` to CodeDeploy.

    Anything that goes wrong before the verdict (bad configuration, an invoke that raises,
    throttling that outlasts the retries) counts as a failure and is reported as
    ``Failed``. Only a failure to report propagates. ``deadline`` (a ``clock()`` value) is
    when the invoke must be over, so that the report still fits.
    """
    try:
        verdict = invoke_target(
            lambda_client,
            SmokeTarget.from_environ(environ),
            deadline=deadline,
            clock=clock,
            sleep=sleep,
        )
    except Exception as error:
        logger.exception("Smoke test could not run: %s", type(error).__name__)
        verdict = Verdict(
            False, _truncate(f"smoke test could not run: {type(error).__name__}: {error}", 300)
        )
    report_status(codedeploy_client, hook, verdict.status)
    return {"status": verdict.status, "reason": verdict.reason, "deploymentId": hook.deployment_id}


def get_lambda_client(read_timeout: float = 60.0) -> Any:
    """The module's Lambda client, created on first use.

    One attempt only: botocore retries read timeouts, which would invoke the target again and
    could outlive this function, leaving the hook unreported.
    """
    global _lambda_client
    if _lambda_client is None:
        _lambda_client = boto3.client(
            "lambda",
            config=Config(
                connect_timeout=5,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1},
            ),
        )
    return _lambda_client


def get_codedeploy_client() -> Any:
    """The module's CodeDeploy client, created on first use."""
    global _codedeploy_client
    if _codedeploy_client is None:
        _codedeploy_client = boto3.client(
            "codedeploy",
            config=Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard"}),
        )
    return _codedeploy_client


def _remaining_seconds(context: Any) -> float:
    return float(context.get_remaining_time_in_millis()) / 1000


def _invoke_timeout(context: Any) -> float:
    remaining = _remaining_seconds(context)
    reserved = REPORT_RESERVE_SECONDS + THROTTLE_RETRY_BUDGET_SECONDS
    return max(remaining - reserved, remaining / 2, 1.0)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    hook = HookExecution.from_event(event)
    return run_smoke_test(
        get_lambda_client(_invoke_timeout(context)),
        get_codedeploy_client(),
        hook,
        os.environ,
        deadline=clock() + _remaining_seconds(context) - REPORT_RESERVE_SECONDS,
        clock=clock,
        sleep=throttle_sleep,
    )
