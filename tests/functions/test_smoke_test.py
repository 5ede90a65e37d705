"""Specification of the CodeDeploy post-traffic smoke-test hook (`opskit/functions/smoke_test`).

One hook serves every function of a stack: it asks CodeDeploy for the deployment's group,
finds that group's smoke test in SMOKE_TESTS, invokes the alias under deployment with the
test event and always reports Succeeded or Failed to CodeDeploy, so that a bad release rolls
back at once.

Test doubles: moto implements no PutLifecycleEventHookExecutionStatus and runs no Lambda
code without Docker, so these calls (and GetDeployment, whose deployment moto would need a
whole CodeDeploy application and revision for) are stood in for by botocore's `Stubber` on
real boto3 clients. The Stubber's expected params pin the exact request, which is how these tests
assert the status reported to CodeDeploy; `assert_no_pending_responses` proves every expected
call happened. Clients still point at the moto server (`aws_environment`), so nothing can
leak to AWS, and one test invokes a missing function on moto's real HTTP endpoint.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from tests.functions.conftest import REGION, load_handler

DEPLOYMENT_ID = "d-ABCDEF123"
HOOK_EXECUTION_ID = "hook-execution-0001"
APPLICATION = "opskit-dev-UserServiceApplication"
GROUP = "opskit-dev-UserServiceDeploymentGroup"
TARGET = "user-service"
ALIAS = "PROD"
TEST_EVENT = b'{"path": "/health"}'
NEIGHBOUR_GROUP = "opskit-dev-BackupDeploymentGroup"
HOOK_EVENT = {"DeploymentId": DEPLOYMENT_ID, "LifecycleEventHookExecutionId": HOOK_EXECUTION_ID}
SMOKE_TESTS: dict[str, Any] = {
    GROUP: {"function": TARGET, "qualifier": ALIAS, "event": {"path": "/health"}},
    NEIGHBOUR_GROUP: {"function": "backup", "qualifier": ALIAS, "event": {"dryRun": True}},
}
ENVIRON = {"SMOKE_TESTS": json.dumps(SMOKE_TESTS)}


def smoke_tests_environ(smoke_tests: Any) -> dict[str, str]:
    return {"SMOKE_TESTS": json.dumps(smoke_tests)}


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


def record_calls(*clients: Any) -> list[str]:
    """The names of the API operations the clients go on to call, in order."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    for client in clients:
        client.meta.events.register("before-parameter-build", record)
    return calls


def expect_deployment(stub: Stubber, group: str = GROUP) -> None:
    stub.add_response(
        "get_deployment",
        {
            "deploymentInfo": {
                "deploymentId": DEPLOYMENT_ID,
                "applicationName": APPLICATION,
                "deploymentGroupName": group,
            }
        },
        expected_params={"deploymentId": DEPLOYMENT_ID},
    )


def expect_invoke(
    stub: Stubber,
    payload: Any,
    *,
    function_error: str | None = None,
    function: str = TARGET,
    qualifier: str = ALIAS,
    test_event: bytes = TEST_EVENT,
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
            "FunctionName": function,
            "InvocationType": "RequestResponse",
            "Qualifier": qualifier,
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
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
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
        ({"statusCode": 399}, "Succeeded", "invoke returned StatusCode 200"),
        ({"statusCode": None}, "Failed", "response statusCode None is not an HTTP status"),
        ({"result": "no statusCode at all"}, "Succeeded", "invoke returned StatusCode 200"),
        (b'"just a string"', "Succeeded", "invoke returned StatusCode 200"),
        (b"not json", "Succeeded", "invoke returned StatusCode 200"),
    ],
    ids=["500", "404-as-string", "399", "null", "no-statusCode", "string", "not-json"],
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
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN the exception does not escape: CodeDeploy is told Failed
    assert result["status"] == "Failed"
    assert "ResourceNotFoundException" in result["reason"]
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


@dataclass
class Remaining:
    seconds: float

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


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
            "Payload": TEST_EVENT,
        },
    )


def test_throttled_invoke_is_retried_and_a_healthy_target_is_reported_succeeded(
    app: ModuleType,
    codedeploy_stub: Stubber,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the deployed hook, 60 s left (its timeout is the target's plus 30 s), its own
    # Lambda client stubbed: the alias is throttled twice (reserved concurrency), then healthy
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    monkeypatch.setattr(app, "throttle_sleep", clock.sleep)
    monkeypatch.setattr(app, "_codedeploy_client", codedeploy_stub.client)
    context = Remaining(60)
    with Stubber(app.get_lambda_client(app._invoke_timeout(context))) as lambda_stub:
        expect_throttle(lambda_stub)
        expect_throttle(lambda_stub)
        expect_invoke(lambda_stub, {"statusCode": 200})
        expect_deployment(codedeploy_stub)
        expect_report(codedeploy_stub, "Succeeded")

        # WHEN CodeDeploy invokes the hook
        result = app.lambda_handler(dict(HOOK_EVENT), context)

        # THEN the throttled invokes were retried after short waits and the release is kept
        assert result["status"] == "Succeeded"
        assert clock.sleeps == [0.5, 1.0]
        lambda_stub.assert_no_pending_responses()
        codedeploy_stub.assert_no_pending_responses()


def test_throttled_on_every_attempt_is_reported_failed_after_the_last_retry(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN the alias stays throttled, and the hook has plenty of time
    clock = FakeClock()
    for _ in range(5):
        expect_throttle(lambda_stub)
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
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
    expect_deployment(codedeploy_stub)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN moto's ResourceNotFoundException becomes a Failed report
    assert result["status"] == "Failed"
    assert "ResourceNotFoundException" in result["reason"]
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    "group",
    ["opskit-dev-ApiDeploymentGroup", "opskit-dev-EmailDeploymentGroup", "opskit-dev-Metrics"],
)
def test_the_deployments_group_chooses_which_smoke_test_runs(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber, group: str
) -> None:
    # GIVEN one hook for a stack of three functions, each with its own deployment group
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:opskit-dev-email"
    smoke_tests = {
        "opskit-dev-ApiDeploymentGroup": {
            "function": "opskit-dev-api",
            "qualifier": "PROD",
            "event": {"path": "/health"},
        },
        "opskit-dev-EmailDeploymentGroup": {
            "function": arn,
            "qualifier": "LIVE",
            "event": {"opskit": {"smokeTest": True}},
        },
        "opskit-dev-Metrics": {"function": "opskit-dev-metrics", "qualifier": "DEV", "event": []},
    }
    chosen = smoke_tests[group]
    # AND CodeDeploy says the deployment belongs to `group`
    expect_deployment(codedeploy_stub, group)
    expect_invoke(
        lambda_stub,
        {"statusCode": 200},
        function=chosen["function"],
        qualifier=chosen["qualifier"],
        test_event=json.dumps(chosen["event"]).encode(),
    )
    expect_report(codedeploy_stub, "Succeeded")

    # WHEN the smoke test runs
    result = app.run_smoke_test(
        lambda_stub.client, codedeploy_stub.client, hook(app), smoke_tests_environ(smoke_tests)
    )

    # THEN that group's function and alias were invoked with that group's test event
    assert result["status"] == "Succeeded"
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_a_group_without_a_smoke_test_is_reported_failed_naming_the_group(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN a deployment of a group the hook's SMOKE_TESTS does not list
    calls = record_calls(lambda_stub.client)
    expect_deployment(codedeploy_stub, "opskit-dev-StrangerDeploymentGroup")
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN nothing is invoked and CodeDeploy is told Failed, for that group
    assert result["status"] == "Failed"
    assert result["reason"].startswith(
        "smoke test could not run: SmokeTestConfigError: this hook has no smoke test for "
        "deployment group 'opskit-dev-StrangerDeploymentGroup'"
    )
    assert calls == []
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize("error_code", ["AccessDeniedException", "DeploymentDoesNotExistException"])
def test_get_deployment_failing_is_reported_failed_without_invoking(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber, error_code: str
) -> None:
    # GIVEN CodeDeploy will not say which group the deployment belongs to
    calls = record_calls(lambda_stub.client)
    codedeploy_stub.add_client_error(
        "get_deployment",
        service_error_code=error_code,
        expected_params={"deploymentId": DEPLOYMENT_ID},
    )
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN the error does not escape: nothing is invoked and CodeDeploy is told Failed, and why
    assert result["status"] == "Failed"
    assert error_code in result["reason"]
    assert "when calling the GetDeployment operation" in result["reason"]
    assert calls == []
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    "response",
    [{}, {"deploymentInfo": {"deploymentId": DEPLOYMENT_ID, "applicationName": APPLICATION}}],
    ids=["no-deploymentInfo", "no-deploymentGroupName"],
)
def test_get_deployment_naming_no_group_is_reported_failed_without_invoking(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber, response: dict[str, Any]
) -> None:
    # GIVEN GetDeployment answers without the deployment's group
    calls = record_calls(lambda_stub.client)
    codedeploy_stub.add_response("get_deployment", response)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), ENVIRON)

    # THEN no KeyError escapes: CodeDeploy is told Failed, for the missing group
    assert result["status"] == "Failed"
    assert "DeploymentLookupError" in result["reason"]
    assert f"names no deployment group for deployment {DEPLOYMENT_ID}" in result["reason"]
    assert calls == []
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "environment variable SMOKE_TESTS is not set"),
        ({"SMOKE_TESTS": "  "}, "environment variable SMOKE_TESTS is not set"),
        ({"SMOKE_TESTS": "{not json"}, "SMOKE_TESTS is not valid JSON"),
        (
            {"SMOKE_TESTS": json.dumps([SMOKE_TESTS])},
            "object keyed by deployment group name, got list",
        ),
        ({"SMOKE_TESTS": '"user-service"'}, "object keyed by deployment group name, got str"),
        ({"SMOKE_TESTS": "null"}, "object keyed by deployment group name, got NoneType"),
        ({"SMOKE_TESTS": "{}"}, "SMOKE_TESTS is an empty object"),
    ],
    ids=["unset", "blank", "not-json", "array", "string", "null", "empty-object"],
)
def test_unusable_smoke_tests_are_reported_failed_before_asking_codedeploy_or_invoking(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    environ: dict[str, str],
    problem: str,
) -> None:
    # GIVEN a hook whose SMOKE_TESTS holds no usable smoke tests
    calls = record_calls(lambda_stub.client, codedeploy_stub.client)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN CodeDeploy is only told Failed, at once, for the configuration problem
    assert result["status"] == "Failed"
    assert "SmokeTestConfigError" in result["reason"]
    assert problem in result["reason"]
    assert calls == ["PutLifecycleEventHookExecutionStatus"]
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("user-service", f"SMOKE_TESTS[{GROUP!r}] must be an object, got str"),
        ([TARGET, ALIAS], f"SMOKE_TESTS[{GROUP!r}] must be an object, got list"),
        (None, f"SMOKE_TESTS[{GROUP!r}] must be an object, got NoneType"),
        ({"qualifier": ALIAS}, f"SMOKE_TESTS[{GROUP!r}] has no function"),
        ({"function": " ", "qualifier": ALIAS}, f"SMOKE_TESTS[{GROUP!r}] has no function"),
        ({"function": 42, "qualifier": ALIAS}, f"SMOKE_TESTS[{GROUP!r}] has no function"),
        ({"function": TARGET}, f"SMOKE_TESTS[{GROUP!r}] has no qualifier"),
        ({"function": TARGET, "qualifier": ""}, f"SMOKE_TESTS[{GROUP!r}] has no qualifier"),
        ({"function": TARGET, "qualifier": ["PROD"]}, f"SMOKE_TESTS[{GROUP!r}] has no qualifier"),
    ],
    ids=[
        "string",
        "array",
        "null",
        "no-function",
        "blank-function",
        "numeric-function",
        "no-qualifier",
        "empty-qualifier",
        "array-qualifier",
    ],
)
def test_a_malformed_entry_for_the_deployments_group_is_reported_failed_without_invoking(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    entry: Any,
    problem: str,
) -> None:
    # GIVEN the deployment's own entry in SMOKE_TESTS is unusable
    calls = record_calls(lambda_stub.client)
    environ = smoke_tests_environ({**SMOKE_TESTS, GROUP: entry})
    expect_deployment(codedeploy_stub)
    expect_report(codedeploy_stub, "Failed")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN nothing is invoked and CodeDeploy is told Failed, for the entry's problem
    assert result["status"] == "Failed"
    assert "SmokeTestConfigError" in result["reason"]
    assert problem in result["reason"]
    assert calls == []
    codedeploy_stub.assert_no_pending_responses()


def test_a_malformed_entry_of_another_group_does_not_fail_this_deployment(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN a neighbour's entry is broken, this deployment's is fine
    environ = smoke_tests_environ({**SMOKE_TESTS, NEIGHBOUR_GROUP: {"qualifier": ALIAS}})
    expect_deployment(codedeploy_stub)
    expect_invoke(lambda_stub, {"statusCode": 200})
    expect_report(codedeploy_stub, "Succeeded")

    # WHEN the smoke test runs
    result = app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN this deployment is judged on its own smoke test alone
    assert result["status"] == "Succeeded"
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("entry", "test_event"),
    [
        ({"function": TARGET, "qualifier": ALIAS}, b"{}"),
        ({"function": TARGET, "qualifier": ALIAS, "event": "ping"}, b'"ping"'),
        ({"function": TARGET, "qualifier": ALIAS, "event": [1, {"a": None}]}, b'[1, {"a": null}]'),
        ({"function": f" {TARGET} ", "qualifier": f"{ALIAS}\n", "event": {}}, b"{}"),
    ],
    ids=["no-event-is-an-empty-object", "string-event", "array-event", "padded-names"],
)
def test_the_test_event_is_sent_as_json_and_defaults_to_an_empty_object(
    app: ModuleType,
    lambda_stub: Stubber,
    codedeploy_stub: Stubber,
    entry: dict[str, Any],
    test_event: bytes,
) -> None:
    # GIVEN the deployment's entry has this event (or none)
    environ = smoke_tests_environ({**SMOKE_TESTS, GROUP: entry})
    expect_deployment(codedeploy_stub)
    expect_invoke(lambda_stub, {"statusCode": 200}, test_event=test_event)
    expect_report(codedeploy_stub, "Succeeded")

    # WHEN the smoke test runs
    app.run_smoke_test(lambda_stub.client, codedeploy_stub.client, hook(app), environ)

    # THEN the alias (names trimmed) is invoked with the event serialised as JSON
    lambda_stub.assert_no_pending_responses()
    codedeploy_stub.assert_no_pending_responses()


def test_failure_to_report_is_raised(
    app: ModuleType, lambda_stub: Stubber, codedeploy_stub: Stubber
) -> None:
    # GIVEN CodeDeploy refuses the status report
    expect_deployment(codedeploy_stub)
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
    calls = record_calls(deployed._lambda_client, deployed._codedeploy_client)

    # WHEN the handler receives an event that is not a lifecycle hook event
    # THEN it raises a typed error naming the missing field, and nothing is invoked or reported:
    # there is no hook execution to report on, nor a deployment to look up
    with pytest.raises(deployed.MalformedHookEventError, match=missing):
        deployed.lambda_handler(event, lambda_context)
    assert not issubclass(deployed.MalformedHookEventError, KeyError)
    assert calls == []


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
    expect_deployment(codedeploy_stub)
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
    assert app._invoke_timeout(Remaining(60)) == (
        60 - app.THROTTLE_RETRY_BUDGET_SECONDS - app.REPORT_RESERVE_SECONDS
    )
    # AND a short-lived hook still gives the invoke half its time (and retries then fit less)
    assert app._invoke_timeout(Remaining(30)) == 15
