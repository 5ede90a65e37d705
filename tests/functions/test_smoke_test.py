"""Specification of the CodeDeploy post-traffic smoke-test hook (`opskit/functions/smoke_test`).

The hook invokes the alias under deployment with a test event and always reports Succeeded
or Failed to CodeDeploy, so that a bad release rolls back at once.

Test doubles: moto implements no PutLifecycleEventHookExecutionStatus and runs no Lambda
code without Docker, so these two calls are stood in for by botocore's `Stubber` on real
boto3 clients. The Stubber's expected params pin the exact request, which is how these tests
assert the status reported to CodeDeploy; `assert_no_pending_responses` proves every expected
call happened. Clients still point at the moto server (`aws_environment`), so nothing can
leak to AWS, and one test invokes a missing function on moto's real HTTP endpoint.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from tests.functions.conftest import REGION, LambdaContext, load_handler

DEPLOYMENT_ID = "d-ABCDEF123"
HOOK_EXECUTION_ID = "hook-execution-0001"
TARGET = "user-service"
ALIAS = "PROD"
HOOK_EVENT = {"DeploymentId": DEPLOYMENT_ID, "LifecycleEventHookExecutionId": HOOK_EXECUTION_ID}
ENVIRON = {
    "TARGET_FUNCTION_NAME": TARGET,
    "TARGET_QUALIFIER": ALIAS,
    "TEST_EVENT": '{"path": "/health"}',
}


@pytest.fixture
def app(aws_environment: str) -> ModuleType:
    return load_handler("smoke_test")


@pytest.fixture
def lambda_stub(aws_environment: str) -> Iterator[Stubber]:
    with Stubber(boto3.client("lambda", region_name=REGION)) as stubber:
        yield stubber


@pytest.fixture
def codedeploy_stub(aws_environment: str) -> Iterator[Stubber]:
    with Stubber(boto3.client("codedeploy", region_name=REGION)) as stubber:
        yield stubber


@pytest.fixture
def deployed(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    monkeypatch: pytest.MonkeyPatch,
) -> ModuleType:
    """The handler module as deployed: its environment set, its clients stubbed."""
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app, "_lambda_client", lambda_stub.client)
    monkeypatch.setattr(app, "_codedeploy_client", codedeploy_stub.client)
    return app


def hook(app: ModuleType) -> Any:
    return app.HookExecution(DEPLOYMENT_ID, HOOK_EXECUTION_ID)


def expect_invoke(
    stub: Stubber,
    payload: Any,
    *,
    function_error: str | None = None,
    test_event: bytes = b'{"path": "/health"}',
) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": "7",
        "Payload": StreamingBody(io.BytesIO(body), len(body)),
    }
    if function_error:
        response["FunctionError"] = function_error
    stub.add_response(
        "invoke",
        response,
        expected_params={
            "FunctionName": TARGET,
            "InvocationType": "RequestResponse",
            "Qualifier": ALIAS,
            "Payload": test_event,
        },
    )


def expect_report(stub: Stubber, status: str) -> None:
    stub.add_response(
        "put_lifecycle_event_hook_execution_status",
        {"lifecycleEventHookExecutionId": HOOK_EXECUTION_ID},
        expected_params={
            "deploymentId": DEPLOYMENT_ID,
            "lifecycleEventHookExecutionId": HOOK_EXECUTION_ID,
            "status": status,
        },
    )


def test_healthy_target_is_reported_succeeded(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN the new version answers the test event with HTTP 200
    expect_invoke(lambda_stub, {"statusCode": 200, "body": "ok"})
    expect_report(codedeploy_stub, "Succeeded")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN the alias was invoked with the test event and CodeDeploy was told Succeeded
    assert result["status"] == "Succeeded"
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_unhandled_function_error_is_reported_failed_and_logged(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN the new version crashes on the test event
    crash = {"errorType": "ZeroDivisionError", "errorMessage": "division by zero"}
    expect_invoke(lambda_stub, crash, function_error="Unhandled")
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    with caplog.at_level(logging.INFO):
        result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN CodeDeploy is told Failed, and the log names the error and shows the payload
    assert result["status"] == "Failed"
    assert result["reason"] == "function error Unhandled (ZeroDivisionError)"
    assert "division by zero" in caplog.text
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"statusCode": 500, "body": "boom"}, "Failed", "response statusCode 500"),
        ({"statusCode": "404"}, "Failed", "response statusCode 404"),
        ({"statusCode": 400}, "Failed", "response statusCode 400"),
        ({"statusCode": 399}, "Succeeded", "invoke returned StatusCode 200"),
        ({"statusCode": None}, "Failed", "response statusCode None is not an HTTP status"),
        ({"result": "no statusCode at all"}, "Succeeded", "invoke returned StatusCode 200"),
        (b'"just a string"', "Succeeded", "invoke returned StatusCode 200"),
        (b"not json", "Succeeded", "invoke returned StatusCode 200"),
    ],
    ids=["500", "404-as-string", "400", "399", "null", "no-statusCode", "string", "not-json"],
)
def test_payload_statuscode_of_400_or_more_is_reported_failed(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    payload: Any,
    status: str,
    reason: str,
) -> None:
    # GIVEN the target returns without a function error, with this payload
    expect_invoke(lambda_stub, payload)
    expect_report(codedeploy_stub, status)

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN only a payload statusCode >= 400 (or an unreadable one) fails the deployment
    assert result == {"status": status, "reason": reason, "deploymentId": DEPLOYMENT_ID}
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_long_failure_payload_is_logged_truncated(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a failing target that returns a huge body
    failure = {"statusCode": 502, "body": "x" * 50_000}
    expect_invoke(lambda_stub, failure)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    with caplog.at_level(logging.INFO):
        app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN the log keeps only the start of the payload
    assert "x" * app.MAX_LOGGED_PAYLOAD_CHARS not in caplog.text
    assert f"... ({len(json.dumps(failure))} chars)" in caplog.text


def test_invoke_client_error_is_reported_failed(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN the alias does not exist
    lambda_stub.add_client_error(
        "invoke",
        service_error_code="ResourceNotFoundException",
        service_message=f"Function not found: {TARGET}:{ALIAS}",
        http_status_code=404,
    )
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN the exception does not escape: CodeDeploy is told Failed
    assert result["status"] == "Failed"
    assert "ResourceNotFoundException" in result["reason"]
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


class FakeClock:
    """Monotonic time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def expect_throttle(stub: Stubber) -> None:
    stub.add_client_error(
        "invoke",
        service_error_code="TooManyRequestsException",
        service_message="Rate Exceeded.",
        http_status_code=429,
        expected_params={
            "FunctionName": TARGET,
            "InvocationType": "RequestResponse",
            "Qualifier": ALIAS,
            "Payload": b'{"path": "/health"}',
        },
    )


@pytest.fixture
def hook_clock(
    app: ModuleType, codedeploy_stub: Stubber, monkeypatch: pytest.MonkeyPatch
) -> FakeClock:
    """The deployed hook's environment and CodeDeploy client; its clock and throttle waits
    are a fake clock, which it returns."""
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    monkeypatch.setattr(app, "clock", clock)
    monkeypatch.setattr(app, "throttle_sleep", clock.sleep)
    monkeypatch.setattr(app, "_codedeploy_client", codedeploy_stub.client)
    return clock


def test_throttled_invoke_is_retried_and_a_healthy_target_is_reported_succeeded(
    app: ModuleType, codedeploy_stub: Stubber, hook_clock: FakeClock
) -> None:
    # GIVEN the deployed hook, 60 s left (its timeout is the target's plus 30 s), its own
    # Lambda client stubbed: the alias is throttled twice (reserved concurrency), then healthy
    context = LambdaContext(remaining_seconds=60)
    with Stubber(app.get_lambda_client(app._invoke_timeout(context))) as lambda_stub:
        expect_throttle(lambda_stub)
        expect_throttle(lambda_stub)
        expect_invoke(lambda_stub, {"statusCode": 200})
        expect_report(codedeploy_stub, "Succeeded")

        # WHEN CodeDeploy invokes the hook
        result = app.lambda_handler(dict(HOOK_EVENT), context)

        # THEN the throttled invokes were retried after short waits and the release is kept
        assert result["status"] == "Succeeded"
        assert hook_clock.sleeps == [0.5, 1.0]
        lambda_stub.assert_no_pending_responses()
        codedeploy_stub.assert_no_pending_responses()


def test_the_handler_stops_retrying_throttles_while_its_time_holds_an_invoke_and_the_report(
    app: ModuleType, codedeploy_stub: Stubber, hook_clock: FakeClock
) -> None:
    # GIVEN the deployed hook with 27.2 s left: an invoke may take 13.6 s and the report
    # keeps 10 s, so 3.6 s remain for waits; the alias stays throttled
    context = LambdaContext(remaining_seconds=27.2)
    with Stubber(app.get_lambda_client(app._invoke_timeout(context))) as lambda_stub:
        for _ in range(4):
            expect_throttle(lambda_stub)
        expect_report(codedeploy_stub, "Failed")

        # WHEN CodeDeploy invokes the hook
        result = app.lambda_handler(dict(HOOK_EVENT), context)

        # THEN the waits that fit were taken (0.5 + 1 + 2 s), the 4 s one was not, and the
        # verdict was reported while the hook still had time to report it
        assert result["status"] == "Failed"
        assert hook_clock.sleeps == [0.5, 1.0, 2.0]
        lambda_stub.assert_no_pending_responses()
        codedeploy_stub.assert_no_pending_responses()


def test_throttled_on_every_attempt_is_reported_failed_after_the_last_retry(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN the alias stays throttled, and the hook has plenty of time
    clock = FakeClock()
    for _ in range(5):
        expect_throttle(lambda_stub)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(
        lambda_stub.client,
        codedeploy_stub.client,
        hook(app),
        ENVIRON,
        deadline=clock.now + 600,
        clock=clock,
        sleep=clock.sleep,
    )

    # THEN it gave up after five attempts and four waits, and said why
    assert result["status"] == "Failed"
    assert "TooManyRequestsException" in result["reason"]
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_throttle_retries_stop_while_a_full_invoke_and_the_report_still_fit(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN a retried invoke may take the client's whole read timeout
    clock = FakeClock()
    read_timeout = lambda_stub.client.meta.config.read_timeout
    for _ in range(2):
        expect_throttle(lambda_stub)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the invoke must end 2 s after one retry's read timeout (room for 0.5 s, not 1.5 s)
    result = app.run_smoke_test(
        lambda_stub.client,
        codedeploy_stub.client,
        hook(app),
        ENVIRON,
        deadline=clock.now + read_timeout + 1.0,
        clock=clock,
        sleep=clock.sleep,
    )

    # THEN it retried once and reported Failed in time rather than risk an unreported hook
    assert result["status"] == "Failed"
    assert clock.sleeps == [0.5]
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_other_invoke_errors_are_not_retried(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN Lambda fails the invoke for a reason other than throttling
    clock = FakeClock()
    lambda_stub.add_client_error(
        "invoke", service_error_code="ServiceException", http_status_code=500
    )
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(
        lambda_stub.client,
        codedeploy_stub.client,
        hook(app),
        ENVIRON,
        deadline=clock.now + 600,
        clock=clock,
        sleep=clock.sleep,
    )

    # THEN it is reported Failed at once: the target may have run
    assert "ServiceException" in result["reason"]
    assert clock.sleeps == []
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_invoking_a_missing_function_on_a_real_endpoint_is_reported_failed(
    app: ModuleType, codedeploy_stub: Stubber, aws_environment: str
) -> None:
    # GIVEN the module's own Lambda client, talking HTTP to moto, where the target does not exist
    lambda_client = app.get_lambda_client()
    assert lambda_client.meta.endpoint_url == aws_environment
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN moto's ResourceNotFoundException becomes a Failed report
    assert result["status"] == "Failed"
    assert "ResourceNotFoundException" in result["reason"]
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({**ENVIRON, "TEST_EVENT": "{not json"}, "TEST_EVENT is not valid JSON"),
        ({k: v for k, v in ENVIRON.items() if k != "TARGET_QUALIFIER"}, "TARGET_QUALIFIER"),
        ({**ENVIRON, "TARGET_FUNCTION_NAME": " "}, "TARGET_FUNCTION_NAME"),
    ],
    ids=["bad-test-event-json", "no-qualifier", "blank-function-name"],
)
def test_bad_configuration_is_reported_failed_without_invoking(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    environ: dict[str, str],
    problem: str,
) -> None:
    # GIVEN a misconfigured smoke test (no invoke is stubbed: any invoke would be unexpected)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN CodeDeploy is told Failed at once, for the configuration problem
    assert result["status"] == "Failed"
    assert "SmokeTestConfigError" in result["reason"]
    assert problem in result["reason"]
    codedeploy_stub.assert_no_pending_responses()


def test_empty_test_event_defaults_to_an_empty_object(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN no TEST_EVENT
    environ = {k: v for k, v in ENVIRON.items() if k != "TEST_EVENT"}
    expect_invoke(lambda_stub, {"statusCode": 200}, test_event=b"{}")
    expect_report(codedeploy_stub, "Succeeded")

    # WHEN the smoke test runs
    app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN the target is invoked with {}
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_failure_to_report_is_raised(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN CodeDeploy refuses the status report
    expect_invoke(lambda_stub, {"statusCode": 200})
    codedeploy_stub.add_client_error(
        "put_lifecycle_event_hook_execution_status", service_error_code="AccessDeniedException"
    )

    # WHEN / THEN the error propagates, so the invocation fails visibly and is retried
    with pytest.raises(ClientError, match="AccessDeniedException"):
        app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("event", "missing"),
    [
        ({"LifecycleEventHookExecutionId": HOOK_EXECUTION_ID}, "DeploymentId"),
        ({"DeploymentId": DEPLOYMENT_ID}, "LifecycleEventHookExecutionId"),
        ({"DeploymentId": "", "LifecycleEventHookExecutionId": HOOK_EXECUTION_ID}, "DeploymentId"),
        (None, "expected a CodeDeploy lifecycle hook event"),
    ],
    ids=["no-deployment-id", "no-hook-execution-id", "empty-deployment-id", "not-an-object"],
)
def test_malformed_hook_event_raises_a_clear_error(
    deployed: ModuleType,
    lambda_context: Any,
    event: Any,
    missing: str,
) -> None:
    # GIVEN a configured handler whose clients answer nothing (the `deployed` fixture)
    # WHEN the handler receives an event that is not a lifecycle hook event
    # THEN it raises a typed error naming the missing field, and nothing is invoked or reported
    with pytest.raises(deployed.MalformedHookEventError, match=missing):
        deployed.lambda_handler(event, lambda_context)
    assert not issubclass(deployed.MalformedHookEventError, KeyError)


@pytest.mark.parametrize(
    ("payload", "status"),
    [({"statusCode": 200}, "Succeeded"), ({"statusCode": 503}, "Failed")],
    ids=["healthy", "unhealthy"],
)
def test_handler_reads_its_environment_and_reports(
    deployed: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    lambda_context: Any,
    payload: dict[str, Any],
    status: str,
) -> None:
    # GIVEN the deployed configuration, the module-level clients stubbed (`deployed`)
    expect_invoke(lambda_stub, payload)
    expect_report(codedeploy_stub, status)

    # WHEN CodeDeploy invokes the hook
    result = deployed.lambda_handler(dict(HOOK_EVENT), lambda_context)

    # THEN the verdict is reported and returned
    assert result["status"] == status
    assert result["deploymentId"] == DEPLOYMENT_ID
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_clients_are_created_lazily_once_and_honour_the_endpoint(
    app: ModuleType, aws_environment: str
) -> None:
    # GIVEN a freshly imported handler: importing created no client
    assert app._lambda_client is None
    assert app._codedeploy_client is None

    # WHEN the clients are asked for twice
    lambda_client = app.get_lambda_client(20.0)
    codedeploy_client = app.get_codedeploy_client()

    # THEN each is created once, reused, and talks to AWS_ENDPOINT_URL
    assert app.get_lambda_client(99.0) is lambda_client
    assert app.get_codedeploy_client() is codedeploy_client
    assert lambda_client.meta.endpoint_url == aws_environment
    assert codedeploy_client.meta.endpoint_url == aws_environment
    # AND the invoke is never retried (a retry re-runs the test event and may outlive the hook)
    assert lambda_client.meta.config.retries["total_max_attempts"] == 1
    assert lambda_client.meta.config.read_timeout == 20.0


def test_invoke_timeout_leaves_time_to_retry_throttles_and_report(app: ModuleType) -> None:
    # GIVEN 60 s left in this invocation
    # WHEN / THEN the invoke may take all but the throttle-retry budget and the report reserve
    assert app._invoke_timeout(LambdaContext(remaining_seconds=60)) == (
        60 - app.THROTTLE_RETRY_BUDGET_SECONDS - app.REPORT_RESERVE_SECONDS
    )
    # AND a short-lived hook still gives the invoke half its time (and retries then fit less)
    assert app._invoke_timeout(LambdaContext(remaining_seconds=30)) == 15
