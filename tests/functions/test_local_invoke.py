"""Specification of local invoke (`make invoke`, `make local`): every function, every sample event.

The functions and their variables come from the committed dev template (tests/golden, which
test_environments.py keeps equal to what synthesis gives), plus the user service's stand-in
definitions where that template has none. One session serves the module: one emulator
(moto's server in this process, in a region of its own, so no other test's resources are
in its account view), the webhook stand-in and the Lambda/CodeDeploy stand-in. Handlers run
in this process, as `make invoke` runs them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from opskit_local import invoke, serve, state, template
from opskit_local.catalog import Catalog
from opskit_local.emulator import client
from opskit_local.errors import LocalError
from opskit_local.events import EVENTS_DIR, samples
from opskit_local.resources import Resolver
from opskit_local.runner import LocalContext
from opskit_local.session import Session, with_stand_ins
from tests.functions.stand_ins import closed_port

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dev.template.json"
REGION = "eu-west-3"
"""The module's emulator region: moto keeps one account view per region, and the other
handler tests use eu-west-1 in this same process."""

SAMPLES = [
    (folder.name, path.stem)
    for folder in sorted(EVENTS_DIR.iterdir())
    for path in samples(folder.name)
]


EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("backup", "dry-run-ec2"): {"backup_type": "ec2", "dry_run": True, "failed": []},
    ("backup", "scheduled"): {"backup_type": "all", "dry_run": False, "failed": []},
    ("env_scheduler", "report"): {"action": "report", "published": True},
    ("env_scheduler", "scale-down-dry-run"): {
        "action": "scale_down",
        "dry_run": True,
        "failed": [],
    },
    ("env_scheduler", "scale-up"): {"action": "scale_up", "dry_run": False, "failed": []},
    ("log_processor", "control-message"): {
        "statusCode": 200,
        "body": {"processed_events": 0, "error_count": 0, "critical_errors": 0},
    },
    ("log_processor", "errors-and-critical"): {
        "statusCode": 200,
        "body": {"processed_events": 3, "error_count": 2, "critical_errors": 1},
    },
    ("notification", "alarm-state-change"): {
        "statusCode": 200,
        "body": {"delivered": True, "alarm": "opskit-dev-undelivered-alerts", "state": "ALARM"},
    },
    ("notification", "pipeline-failed"): {
        "statusCode": 200,
        "body": {"delivered": True, "pipeline": "web-app", "state": "FAILED"},
    },
    ("notification", "smoke-test"): {"statusCode": 200, "body": {"smokeTest": "passed"}},
    ("notification", "stage-succeeded"): {
        "statusCode": 200,
        "body": {"delivered": True, "stage": "Deploy", "state": "SUCCEEDED"},
    },
    ("smoke_test", "codedeploy-hook"): {"status": "Succeeded", "deploymentId": "d-LOCAL0001"},
    ("snapshot_cleanup", "dry-run"): {"dry_run": True, "deleted_count": 0},
    ("snapshot_cleanup", "scheduled"): {"dry_run": False, "deleted_count": 0},
    ("user_service.api", "create-user"): {
        "statusCode": 201,
        "body": {"user": {"email": "ada@example.com", "name": "Ada Lovelace"}},
    },
    ("user_service.api", "get-missing-user"): {"statusCode": 404},
    ("user_service.api", "list-users"): {"statusCode": 200},
    ("user_service.email_sender", "sqs-welcome"): {"batchItemFailures": []},
    ("user_service.user_created", "sns-user-created"): {
        "statusCode": 200,
        "body": {
            "results": [
                {
                    "audit_id": "user_created:95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                    "result": "queued",
                }
            ]
        },
    },
    ("user_service.user_metrics", "dry-run"): {"published": False, "count_source": "describe"},
    ("user_service.user_metrics", "scheduled"): {"published": True},
}
"""What each sample's result holds (a JSON ``body`` compared as the object it encodes)."""


def sample_event(function: str, name: str) -> Any:
    return json.loads((EVENTS_DIR / function / f"{name}.json").read_text())


def assert_holds(actual: Any, expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        found = actual[key]
        if key == "body" and isinstance(value, dict):
            found = json.loads(found)
        if isinstance(value, dict):
            assert_holds(found, value)
        else:
            assert found == value, f"{key}: {found!r} != {value!r}"


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return template.read(GOLDEN)


@pytest.fixture(scope="module")
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def session(golden: dict[str, Any], log: io.StringIO) -> Iterator[Session]:
    with Session.start(golden, environment_name="dev", log=log, region=REGION) as started:
        yield started


@pytest.fixture
def no_make_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder of the test's own: no `make local` runs there."""
    monkeypatch.setenv(template.STATE_ENV, str(tmp_path / "state"))
    return tmp_path


def test_every_function_has_sample_events() -> None:
    functions = set(Catalog.of(with_stand_ins(template.read(GOLDEN))).by_name)
    assert functions == {folder.name for folder in EVENTS_DIR.iterdir() if samples(folder.name)}
    assert set(SAMPLES) == set(EXPECTED), "every sample has its expectation below"


def test_stand_ins_join_a_template_only_for_the_user_service_functions_it_lacks(
    golden: dict[str, Any],
) -> None:
    # GIVEN the dev template without the user service's API function
    catalog = Catalog.of(golden)
    api = catalog.get("user_service.api").logical_id
    lacking = {**golden, "Resources": {k: v for k, v in golden["Resources"].items() if k != api}}
    # WHEN the stand-ins are added
    merged = with_stand_ins(lacking)["Resources"]
    # THEN the API's stand-in and the resources it names join; no other function's stand-in
    names = Catalog.of({"Resources": merged}).by_name
    assert names["user_service.api"].logical_id == "UserServiceLocalApi"
    for function in ("user_service.user_created", "user_service.email_sender"):
        assert names[function].logical_id == catalog.get(function).logical_id
    assert {"UserServiceLocalUsersTable", "UserServiceLocalPageTokenSecret"} <= set(merged)
    assert "UserServiceLocalUserCreated" not in merged
    # AND a template that has every function stays as it is
    assert with_stand_ins(golden) == golden


@pytest.mark.parametrize(("function", "sample"), SAMPLES, ids=[f"{f}-{s}" for f, s in SAMPLES])
def test_every_function_runs_every_sample_event_against_the_emulator(
    session: Session, log: io.StringIO, function: str, sample: str
) -> None:
    # GIVEN the function's sample event
    event = sample_event(function, sample)
    # WHEN it is invoked locally
    invocation = session.invoke(function, event)
    # THEN the handler returned what this event asks of it, and logged like Lambda
    assert invocation.error is None, invocation.result
    assert_holds(invocation.result, EXPECTED[(function, sample)])
    assert f"START RequestId: {invocation.request_id} Version: $LATEST" in log.getvalue()
    assert f"REPORT RequestId: {invocation.request_id}\tDuration: " in log.getvalue()


def test_the_notifier_posts_to_the_webhook_stand_in_its_secret_names(session: Session) -> None:
    assert session.webhook is not None
    before = len(session.webhook.received)
    session.invoke(
        "notification",
        sample_event("notification", "pipeline-failed"),
    )
    [message] = session.webhook.received[before:]
    assert message["text"] == "web-app: FAILED"


def test_the_smoke_test_runs_its_target_locally_and_reports_to_codedeploy(session: Session) -> None:
    hook = sample_event("smoke_test", "codedeploy-hook")
    assert session.lambda_stand_in is not None
    before = len(session.lambda_stand_in.hook_statuses)
    result = session.invoke("smoke_test", hook).result
    assert result["status"] == "Succeeded"
    assert session.lambda_stand_in.hook_statuses[before:] == [
        {
            "deploymentId": hook["DeploymentId"],
            "lifecycleEventHookExecutionId": hook["LifecycleEventHookExecutionId"],
            "status": "Succeeded",
        }
    ]


def test_the_lambda_stand_in_answers_invoke_as_lambda_does(session: Session) -> None:
    # GIVEN a Lambda client pointed at the stand-in, as the handlers' are
    lambda_ = client("lambda", session.lambda_url, region=REGION)
    notifier = session.deployed(session.function("notification")).function_name
    # WHEN the notifier is invoked by ARN and alias, and a function that does not exist
    answer = lambda_.invoke(
        FunctionName=session.function_arn(notifier) + ":DEV",
        Payload=json.dumps({"opskit": {"smokeTest": True}}).encode(),
    )
    with pytest.raises(ClientError) as missing:
        lambda_.invoke(FunctionName="opskit-dev-Nothing", Payload=b"{}")
    # THEN the first ran locally and answered its result; the second is Lambda's 404
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(json.loads(answer["Payload"].read())["body"])["smokeTest"] == "passed"
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_event_and_dry_run_invokes_and_a_payload_that_is_not_json_answer_as_lambda_does(
    session: Session,
) -> None:
    lambda_ = client("lambda", session.lambda_url, region=REGION)
    notifier = session.deployed(session.function("notification")).function_name
    smoke_test = json.dumps({"opskit": {"smokeTest": True}}).encode()
    queued = lambda_.invoke(FunctionName=notifier, InvocationType="Event", Payload=smoke_test)
    assert (queued["StatusCode"], queued["Payload"].read()) == (202, b"")
    checked = lambda_.invoke(FunctionName=notifier, InvocationType="DryRun")
    assert checked["StatusCode"] == 204
    with pytest.raises(ClientError) as refused:
        lambda_.invoke(FunctionName=notifier, Payload=b"not json")
    assert refused.value.response["Error"]["Code"] == "InvalidRequestContentException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_the_context_counts_down_from_the_functions_timeout_and_stops_at_zero() -> None:
    def context(started_ago: float) -> LocalContext:
        return LocalContext(
            function_name="opskit-dev-Worker",
            memory_limit_in_mb=256,
            invoked_function_arn="arn:aws:lambda:eu-north-1:123456789012:function:w",
            timeout_seconds=30,
            started=time.monotonic() - started_ago,
        )

    assert 29_000 < context(0).get_remaining_time_in_millis() <= 30_000
    assert 19_000 < context(10).get_remaining_time_in_millis() <= 20_000
    assert context(31).get_remaining_time_in_millis() == 0
    assert context(0).log_group_name == "/aws/lambda/opskit-dev-Worker"


def test_a_handler_that_raises_gives_lambdas_error_object(session: Session) -> None:
    invocation = session.invoke("notification", {"detail-type": "Something Else"})
    assert invocation.error == "Unhandled"
    assert invocation.result["errorType"] == "MalformedEventError"
    assert "unsupported detail-type 'Something Else'" in invocation.result["errorMessage"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, log = io.StringIO(), io.StringIO()
    try:
        code = invoke.run(argv, out=out, log=log)
    except LocalError as error:
        return 2, out.getvalue(), f"opskit local: {error}\n"
    return code, out.getvalue(), log.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["notifier"],
            "opskit local: unknown function 'notifier'; functions: backup, env_scheduler,"
            " log_processor, notification, smoke_test, snapshot_cleanup, user_service.api,"
            " user_service.email_sender, user_service.user_created, user_service.user_metrics",
        ),
        (
            ["notification", "nope.json"],
            "opskit local: event file nope.json does not exist, nor is it a sample of"
            " notification (alarm-state-change, pipeline-failed, smoke-test, stage-succeeded)",
        ),
        (
            ["notification", '{"detail-type": '],
            "opskit local: EVENT is not JSON: Expecting value at line 1 column 17",
        ),
    ],
    ids=["unknown-function", "missing-event-file", "inline-not-json"],
)
def test_what_the_user_must_fix_is_one_line(no_make_local, argv, message) -> None:
    code, out, log = run_cli([*argv, "--template", str(GOLDEN)])
    assert (code, out, log) == (2, "", message + "\n")


def test_an_event_file_that_is_not_json_is_one_line(no_make_local: Path) -> None:
    bad = no_make_local / "bad.json"
    bad.write_text("{'single': 'quotes'}")
    code, out, log = run_cli(["notification", str(bad), "--template", str(GOLDEN)])
    assert (code, out) == (2, "")
    assert log == (
        f"opskit local: event file {bad} is not JSON: Expecting property name enclosed in"
        " double quotes at line 1 column 2\n"
    )


def test_a_reference_the_emulator_cannot_stand_in_for_names_function_variable_and_type(
    session: Session, golden: dict[str, Any]
) -> None:
    # GIVEN a template whose notifier names an event bus in its variables
    changed = json.loads(json.dumps(golden))
    changed["Resources"]["Bus"] = {"Type": "AWS::Events::EventBus", "Properties": {"Name": "b"}}
    catalog = Catalog.of(changed)
    notifier = changed["Resources"][catalog.get("notification").logical_id]
    notifier["Properties"]["Environment"]["Variables"]["EVENT_BUS"] = {"Ref": "Bus"}
    resolver = Resolver(
        changed,
        clients=lambda service: client(service, session.endpoint_url, region=REGION),
        region=REGION,
        stack_name="opskit-dev",
        webhook_url="http://127.0.0.1:9/unused",
    )
    # WHEN its variables are resolved
    with pytest.raises(LocalError) as raised:
        resolver.environment(Catalog.of(changed).get("notification"))
    # THEN one line says which variable refers to what
    assert str(raised.value) == (
        "notification: EVENT_BUS refers to AWS::Events::EventBus Bus, which the local emulator"
        " cannot stand in for"
    )


@pytest.fixture(scope="module")
def make_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[state.Running]:
    """`make local` for dev (the golden template), serving from a thread of this process."""
    stop = threading.Event()
    argv = ["--template", str(GOLDEN), "--region", "eu-north-1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(template.STATE_ENV, str(tmp_path_factory.mktemp("state")))
        thread = threading.Thread(target=serve.serve, args=(argv,), kwargs={"stop": stop})
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while (running := state.read()) is None:
                assert thread.is_alive() and time.monotonic() < deadline, "make local did not start"
                time.sleep(0.02)
            yield running
        finally:
            stop.set()
            thread.join(timeout=10)


def test_make_invoke_uses_the_running_make_local_and_its_data_lasts_across_invokes(
    make_local: state.Running,
) -> None:
    # GIVEN `make local` running, with every function's variables resolved
    assert {d.function.name for d in make_local.functions} >= {"notification", "user_service.api"}
    assert all(d.problem is None for d in make_local.functions)
    # WHEN a user is created in one invocation and listed in the next
    created = run_cli(["user_service.api", "create-user", "--template", str(GOLDEN)])
    listed = run_cli(["user_service.api", "list-users", "--template", str(GOLDEN)])
    # THEN both ran against make local's emulator, which kept the user in between
    for code, _, log in (created, listed):
        assert code == 0
        assert f"AWS emulated by the emulator of `make local` at {make_local.endpoint_url}" in log
    user = json.loads(json.loads(created[1])["body"])["user"]
    assert [u["user_id"] for u in json.loads(json.loads(listed[1])["body"])["users"]] == [
        user["user_id"]
    ]
    # AND the result alone is on stdout, the log lines on the other stream
    assert listed[1].startswith("{") and "START RequestId" in listed[2]


def test_make_invoke_of_a_handler_that_raises_exits_1_with_lambdas_error_object(
    make_local: state.Running,
) -> None:
    event = json.dumps({"detail-type": "Something Else"})
    code, out, _ = run_cli(["notification", event, "--template", str(GOLDEN)])
    assert code == 1
    assert json.loads(out)["errorType"] == "MalformedEventError"


def test_make_invoke_for_another_environment_starts_its_own_emulator(
    make_local: state.Running,
) -> None:
    code, _, log = run_cli(["smoke_test", "--env", "staging", "--template", str(GOLDEN)])
    assert code == 0
    assert "`make local` runs dev, not staging; starting an emulator for this call" in log
    assert "AWS emulated by an emulator started for this call at http://127.0.0.1:" in log


def test_a_state_file_of_a_make_local_that_is_gone_is_no_running_make_local(
    make_local: state.Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(template.STATE_ENV, str(tmp_path))
    gone = dataclasses.replace(make_local, pid=finished_pid())
    gone.write()
    assert state.read() is None, "its process has ended"
    silent = dataclasses.replace(
        make_local, pid=os.getpid(), endpoint_url=f"http://127.0.0.1:{closed_port()}"
    )
    silent.write()
    assert state.read() is None, "nothing answers at its endpoint"
    dataclasses.replace(make_local, pid=os.getpid()).write()
    assert state.read() == dataclasses.replace(make_local, pid=os.getpid())
    state.running_file().write_text("{not json")
    assert state.read() is None


def finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_second_make_local_is_refused_in_one_line(make_local: state.Running) -> None:
    with pytest.raises(LocalError) as raised:
        serve.serve(["--template", str(GOLDEN)], stop=threading.Event())
    assert str(raised.value) == (
        f"`make local` already runs dev (process {make_local.pid}) at {make_local.endpoint_url}"
    )
