"""Specification of the hourly metrics job (opskit/functions/user_service/user_metrics.py).

Users are stored with a controlled clock through the data model; the job runs
in-process against moto (DynamoDB, CloudWatch) and its datapoints are read back with
GetMetricStatistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opskit_common.config import ConfigurationError
from opskit_common.events import MalformedEventError

from opskit_local.functions import load_function
from opskit_local.user_service import UserServiceResources
from tests.functions.user_service.conftest import Clients

HOUR = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


@pytest.fixture
def namespace(resources: UserServiceResources, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"opskit-test/{uuid.uuid4().hex[:8]}/Users"
    monkeypatch.setenv("METRICS_NAMESPACE", name)
    monkeypatch.delenv("USER_COUNT_SOURCE", raising=False)
    return name


@pytest.fixture
def job(namespace: str) -> Iterator[Any]:
    module: Any = load_function("user_service", "user_metrics")
    module.clock = lambda: HOUR + timedelta(hours=1, minutes=2)  # the 14:00 run, a bit late
    yield module


def seed(aws: Clients, table_name: str, moments: list[datetime]) -> Any:
    users = load_function("user_service", "users")
    clock_values = iter(moments)
    store = users.UserStore(
        table_name=table_name, dynamodb=aws("dynamodb"), clock=lambda: next(clock_values)
    )
    return [store.create(email=f"u{i}@example.com", name="U") for i in range(len(moments))]


def datapoints(
    aws: Clients, namespace: str, table_name: str, metric: str
) -> list[tuple[datetime, float]]:
    response = aws("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[{"Name": "TableName", "Value": table_name}],
        StartTime=HOUR - timedelta(days=1),
        EndTime=HOUR + timedelta(days=1),
        Period=3600,
        Statistics=["Maximum"],
    )
    return sorted((p["Timestamp"].astimezone(UTC), p["Maximum"]) for p in response["Datapoints"])


def test_the_hourly_run_publishes_the_total_and_the_last_full_hours_sign_ups(
    aws: Clients, resources: UserServiceResources, namespace: str, job: Any, lambda_context: Any
) -> None:
    # GIVEN 2 users before 13:00, 3 between 13:00 and 14:00, 1 at 14:01 (and one deleted)
    created = seed(
        aws,
        resources.table_name,
        [
            HOUR - timedelta(minutes=30),
            HOUR - timedelta(microseconds=1),
            HOUR,
            HOUR + timedelta(minutes=30),
            HOUR + timedelta(minutes=59, seconds=59),
            HOUR + timedelta(hours=1, minutes=1),
            HOUR + timedelta(minutes=10),
        ],
    )
    load_function("user_service", "users").UserStore(
        table_name=resources.table_name, dynamodb=aws("dynamodb")
    ).delete(created[-1].user_id)

    # WHEN the 14:00 run happens at 14:02
    result = job.lambda_handler({}, lambda_context)

    # THEN the window is [13:00, 14:00), with its 3 users, and the total is 6
    assert result == {
        "window_start": "2026-11-28T13:00:00.000000Z",
        "window_end": "2026-11-28T14:00:00.000000Z",
        "users_created": 3,
        "total_users": 6,
        "count_source": "describe",
        "published": True,
    }
    # AND CloudWatch has them, per table: sign-ups at the hour they describe
    assert datapoints(aws, namespace, resources.table_name, "UsersCreated") == [(HOUR, 3.0)]
    assert datapoints(aws, namespace, resources.table_name, "TotalUsers") == [
        (HOUR + timedelta(hours=1), 6.0)
    ]


def test_a_dry_run_for_a_past_hour_counts_without_publishing(
    aws: Clients, resources: UserServiceResources, namespace: str, job: Any, lambda_context: Any
) -> None:
    seed(aws, resources.table_name, [HOUR - timedelta(hours=5, minutes=1)] * 1)

    result = job.lambda_handler(
        {"window_end": "2026-11-28T08:59:00Z", "dryRun": True}, lambda_context
    )

    assert (result["window_start"], result["window_end"]) == (
        "2026-11-28T07:00:00.000000Z",
        "2026-11-28T08:00:00.000000Z",
    )
    assert (result["users_created"], result["total_users"], result["published"]) == (1, 1, False)
    assert aws("cloudwatch").list_metrics(Namespace=namespace)["Metrics"] == []


def test_the_deployment_smoke_test_is_a_dry_run(
    aws: Clients, resources: UserServiceResources, namespace: str, job: Any, lambda_context: Any
) -> None:
    # GIVEN a user signed up in the hour before the run
    seed(aws, resources.table_name, [HOUR + timedelta(minutes=5)])

    # WHEN the post-traffic hook sends its smoke test
    result = job.lambda_handler({"opskit": {"smokeTest": True}}, lambda_context)

    # THEN it reads what a run reads and publishes nothing
    assert (result["users_created"], result["published"]) == (1, False)
    assert aws("cloudwatch").list_metrics(Namespace=namespace)["Metrics"] == []


def test_the_scan_source_counts_exactly(
    aws: Clients,
    resources: UserServiceResources,
    namespace: str,
    job: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER_COUNT_SOURCE", "SCAN")
    seed(aws, resources.table_name, [HOUR + timedelta(minutes=i) for i in range(4)])

    result = job.lambda_handler({"dryRun": True}, lambda_context)

    assert (result["count_source"], result["total_users"], result["users_created"]) == (
        "scan",
        4,
        4,
    )


def test_configuration_and_event_mistakes_are_named(
    resources: UserServiceResources,
    namespace: str,
    job: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MalformedEventError, match="window_end"):
        job.lambda_handler({"window_end": "yesterday"}, lambda_context)
    with pytest.raises(MalformedEventError, match="dryRun"):
        job.lambda_handler({"dryRun": "yes"}, lambda_context)
    monkeypatch.setenv("USER_COUNT_SOURCE", "guess")
    with pytest.raises(ConfigurationError, match="USER_COUNT_SOURCE"):
        job.lambda_handler({}, lambda_context)
    monkeypatch.delenv("METRICS_NAMESPACE")
    with pytest.raises(ConfigurationError, match="METRICS_NAMESPACE"):
        job.lambda_handler({}, lambda_context)
