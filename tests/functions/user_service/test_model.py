"""Specification of the data model (opskit/functions/user_service/users.py) on moto.

DynamoDB cancels a transaction that meets another one on the same items
(TransactionConflict), and may lose the answer to a transaction that committed; moto
does neither, so those cases run through a thin client on top of moto's that injects
them (`Flaky`) and passes everything else through. Two more such clients stand in for
what a single-threaded moto cannot show: another writer between a read and a write
(`Race`), and pages DynamoDB ends early at 1 MB (`ShortPages`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from opskit_local.api_gateway import proxy_event
from opskit_local.functions import load_function
from opskit_local.user_service import UserServiceResources
from tests.functions.user_service.conftest import Clients

users = load_function("user_service", "users")


def conflict() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
        },
        "TransactWriteItems",
    )


def in_progress() -> ClientError:
    """What DynamoDB answers while a transaction with the same idempotency token runs."""
    return ClientError(
        {"Error": {"Code": "TransactionInProgressException", "Message": "in progress"}},
        "TransactWriteItems",
    )


class Flaky:
    """moto's client, with scripted trouble for TransactWriteItems."""

    def __init__(
        self,
        real: Any,
        *,
        conflicts: int = 0,
        replay_first: bool = False,
        error: Callable[[], ClientError] = conflict,
    ) -> None:
        self._real = real
        self.conflicts = conflicts
        self.error = error
        self.replay_first = replay_first
        self.transactions = 0

    def transact_write_items(self, **request: Any) -> Any:
        self.transactions += 1
        if self.conflicts:
            self.conflicts -= 1
            raise self.error()
        if self.replay_first:
            # the first attempt commits but its answer is lost; the retry meets its effect
            self.replay_first = False
            self._real.transact_write_items(**request)
        return self._real.transact_write_items(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class ShortPages:
    """moto's client, answering each Scan with at most `size` items, as DynamoDB does when
    a page reaches 1 MB before `Limit`; records the Limit asked for."""

    def __init__(self, real: Any, size: int) -> None:
        self._real = real
        self.size = size
        self.limits: list[int] = []

    def scan(self, **request: Any) -> Any:
        self.limits.append(request["Limit"])
        return self._real.scan(**{**request, "Limit": min(request["Limit"], self.size)})

    def get_item(self, **request: Any) -> Any:
        assert request.get("ConsistentRead") is True, "a read after a write must see it"
        return self._real.get_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Race:
    """moto's client; `competitor` runs once, just before the first call of `operation` goes
    out: another writer acting between the store's read and its write."""

    def __init__(self, real: Any, operation: str, competitor: Callable[[], None]) -> None:
        self._real = real
        self._operation = operation
        self._competitor: Callable[[], None] | None = competitor

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._real, name)
        if name != self._operation:
            return call

        def racing(**request: Any) -> Any:
            if self._competitor is not None:
                competitor, self._competitor = self._competitor, None
                competitor()
            return call(**request)

        return racing


class ConflictingUpdates:
    """moto's client, whose first `conflicts` UpdateItem calls meet a concurrent transaction."""

    def __init__(self, real: Any, *, conflicts: int) -> None:
        self._real = real
        self.conflicts = conflicts
        self.calls = 0

    def update_item(self, **request: Any) -> Any:
        self.calls += 1
        if self.conflicts:
            self.conflicts -= 1
            raise ClientError(
                {"Error": {"Code": "TransactionConflictException", "Message": "conflict"}},
                "UpdateItem",
            )
        return self._real.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class DayQueries:
    """moto's client, recording the ``created_day`` of every Query its paginators send."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.days: list[str] = []

    def get_paginator(self, operation: str) -> Any:
        paginator = self._real.get_paginator(operation)
        days = self.days

        class Recording:
            def paginate(self, **request: Any) -> Any:
                days.append(request["ExpressionAttributeValues"][":day"]["S"])
                return paginator.paginate(**request)

        return Recording()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class OtherIndexCount:
    """moto's client, whose DescribeTable gives every index but the e-mail index `count`."""

    def __init__(self, real: Any, count: int) -> None:
        self._real = real
        self.count = count

    def describe_table(self, **request: Any) -> Any:
        response = self._real.describe_table(**request)
        for index in response["Table"]["GlobalSecondaryIndexes"]:
            if index["IndexName"] != "email-index":
                index["ItemCount"] = self.count
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def make_store(
    aws: Clients,
    table_name: str,
    client: Any = None,
    *,
    sleep: Callable[[float], None] = lambda seconds: None,
    **kwargs: Any,
) -> Any:
    return users.UserStore(
        table_name=table_name, dynamodb=client or aws("dynamodb"), sleep=sleep, **kwargs
    )


def test_a_transaction_conflict_is_retried_with_backoff(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN DynamoDB cancels the first two attempts for conflicts with other transactions
    flaky = Flaky(aws("dynamodb"), conflicts=2)
    waits: list[float] = []
    store = make_store(aws, resources.table_name, flaky, sleep=waits.append)

    # WHEN a user is created
    user = store.create(email="ada@example.com", name="Ada")

    # THEN the third attempt commits, after two growing, bounded waits
    assert flaky.transactions == 3
    assert len(waits) == 2 and 0 < waits[0] <= 0.025 and waits[0] < waits[1] <= 0.05
    assert store.get(user.user_id) == user


@pytest.mark.parametrize(
    ("jitter", "waits"),
    [
        (0.0, [0.0125, 0.025, 0.05, 0.1, 0.2, 0.2]),
        (0.5, [0.01875, 0.0375, 0.075, 0.15, 0.3, 0.3]),
    ],
    ids=["least", "middle"],
)
def test_backoff_doubles_from_25_ms_up_to_400_ms_and_waits_half_of_it_plus_jitter(
    aws: Clients,
    resources: UserServiceResources,
    monkeypatch: pytest.MonkeyPatch,
    jitter: float,
    waits: list[float],
) -> None:
    # GIVEN a store of 7 attempts, the first 6 of which conflict, and a fixed random draw
    monkeypatch.setattr(users, "random", SimpleNamespace(random=lambda: jitter))
    slept: list[float] = []
    flaky = Flaky(aws("dynamodb"), conflicts=6)
    store = make_store(aws, resources.table_name, flaky, sleep=slept.append, attempts=7)

    # WHEN a user is created
    store.create(email="ada@example.com", name="Ada")

    # THEN each wait is half the ceiling plus the draw's share of the other half, the
    # ceiling doubling from 25 ms and staying at 400 ms
    assert slept == pytest.approx(waits)


def test_conflicts_beyond_the_attempts_are_contention_and_the_api_says_503(
    aws: Clients, resources: UserServiceResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every attempt conflicts
    flaky = Flaky(aws("dynamodb"), conflicts=100)
    waits: list[float] = []
    store = make_store(aws, resources.table_name, flaky, sleep=waits.append)

    # WHEN a user is created through the store  THEN ContentionError after 5 attempts,
    # with a wait between two attempts and none after the last
    with pytest.raises(users.ContentionError):
        store.create(email="ada@example.com", name="Ada")
    assert flaky.transactions == 5
    assert len(waits) == 4

    # AND through the API: 503 with Retry-After, not a 500
    api = load_function("user_service", "api")
    real_client = api.client
    busy = Flaky(real_client("dynamodb"), conflicts=100)
    monkeypatch.setattr(
        api, "client", lambda name: busy if name == "dynamodb" else real_client(name)
    )
    monkeypatch.setattr(api.users, "_backoff", lambda attempt: 0.0)
    event = proxy_event(
        method="POST",
        target="/users",
        headers=[],
        body=b'{"email": "ada@example.com", "name": "Ada"}',
        resources=[],
        claims={"sub": "caller"},
    )
    response = api.lambda_handler(event, None)
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == "1"


def test_a_transaction_in_progress_is_retried_and_any_other_failure_is_raised_at_once(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN DynamoDB answers the first attempt with TransactionInProgressException
    flaky = Flaky(aws("dynamodb"), conflicts=1, error=in_progress)
    store = make_store(aws, resources.table_name, flaky)

    # WHEN a user is created  THEN the second attempt commits it
    user = store.create(email="ada@example.com", name="Ada")
    assert flaky.transactions == 2
    assert store.get(user.user_id) == user

    # AND a transaction that fails for any other reason (here: no such table) is not retried
    missing = Flaky(aws("dynamodb"))
    with pytest.raises(ClientError) as raised:
        make_store(aws, "no-such-table", missing).create(email="ada@example.com", name="Ada")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert missing.transactions == 1


def test_a_rename_that_meets_concurrent_transactions_is_retried_then_is_contention(
    aws: Clients, resources: UserServiceResources
) -> None:
    ada = make_store(aws, resources.table_name).create(email="ada@example.com", name="Ada")

    # GIVEN the first two renames meet a concurrent transaction on the user
    waits: list[float] = []
    busy = ConflictingUpdates(aws("dynamodb"), conflicts=2)
    store = make_store(aws, resources.table_name, busy, sleep=waits.append)

    # WHEN ada is renamed  THEN the third attempt renames her, after two waits
    assert store.update(ada.user_id, name="Countess", email=None).name == "Countess"
    assert (busy.calls, len(waits)) == (3, 2)

    # AND when every attempt conflicts: ContentionError after 5, with no wait after the last
    waits.clear()
    always = ConflictingUpdates(aws("dynamodb"), conflicts=100)
    with pytest.raises(users.ContentionError):
        make_store(aws, resources.table_name, always, sleep=waits.append).update(
            ada.user_id, name="Ada", email=None
        )
    assert (always.calls, len(waits)) == (5, 4)
    assert store.get(ada.user_id).name == "Countess"


def test_a_create_whose_answer_was_lost_is_not_reported_as_a_conflict_with_itself(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN the first attempt commits but its answer is lost (the SDK then retries)
    store = make_store(aws, resources.table_name, Flaky(aws("dynamodb"), replay_first=True))

    # WHEN a user is created  THEN it is created, once, not refused as taken by itself
    user = store.create(email="ada@example.com", name="Ada")
    assert store.get(user.user_id) == user
    assert [
        u.user_id for u in store.find_by_email("ada@example.com", limit=5, start_key=None).users
    ] == [user.user_id]


def test_a_guard_owned_by_someone_else_is_never_deleted(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN ada, whose guard was (by some corruption) handed to another owner
    store = make_store(aws, resources.table_name)
    ada = store.create(email="ada@example.com", name="Ada")
    aws("dynamodb").put_item(
        TableName=resources.table_name,
        Item={
            **users.guard_key("ada@example.com"),
            "item_type": {"S": "email_guard"},
            "owner_id": {"S": "someone-else"},
        },
    )

    # WHEN ada is moved or deleted  THEN IntegrityError, and nothing changes
    with pytest.raises(users.IntegrityError):
        store.update(ada.user_id, name=None, email="countess@example.com")
    with pytest.raises(users.IntegrityError):
        store.delete(ada.user_id)
    assert store.get(ada.user_id) == ada
    guard = aws("dynamodb").get_item(
        TableName=resources.table_name, Key=users.guard_key("ada@example.com")
    )["Item"]
    assert guard["owner_id"]["S"] == "someone-else"
    assert "Item" not in aws("dynamodb").get_item(
        TableName=resources.table_name, Key=users.guard_key("countess@example.com")
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_time_windows_count_exactly_the_users_created_in_them_across_midnight(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN users created at known moments around midnight
    moments = [
        "2026-11-27T22:59:59.999999",
        "2026-11-27T23:00:00",
        "2026-11-27T23:59:59.999999",
        "2026-11-28T00:00:00",
        "2026-11-28T00:30:00",
        "2026-11-28T01:00:00",
    ]
    clock_values = iter(at(m) for m in moments)
    store = make_store(aws, resources.table_name, clock=lambda: next(clock_values))
    for i in range(len(moments)):
        store.create(email=f"u{i}@example.com", name="U")

    # WHEN windows are counted  THEN [start, end) holds, across the day boundary
    assert store.count_created_between(at("2026-11-27T23:00:00"), at("2026-11-28T01:00:00")) == 4
    assert store.count_created_between(at("2026-11-28T00:00:00"), at("2026-11-28T01:00:00")) == 2
    assert store.count_created_between(at("2026-11-27T23:00:00"), at("2026-11-28T00:00:00")) == 2
    assert store.count_created_between(at("2026-11-26T00:00:00"), at("2026-11-29T00:00:00")) == 6
    assert store.count_created_between(at("2026-11-28T02:00:00"), at("2026-11-28T01:00:00")) == 0


def test_a_window_queries_exactly_the_utc_days_it_touches(
    aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN a user created at midnight
    midnight = at("2026-11-28T00:00:00")
    make_store(aws, resources.table_name, clock=lambda: midnight).create(
        email="m@example.com", name="M"
    )
    queries = DayQueries(aws("dynamodb"))
    store = make_store(aws, resources.table_name, queries)

    # WHEN a window ends at midnight  THEN only the day before is queried
    assert store.count_created_between(at("2026-11-27T23:00:00"), midnight) == 0
    assert queries.days == ["2026-11-27"]

    # WHEN it ends a microsecond later  THEN it holds the midnight user, and both days are queried
    queries.days.clear()
    later = midnight + timedelta(microseconds=1)
    assert store.count_created_between(at("2026-11-27T23:00:00"), later) == 1
    assert queries.days == ["2026-11-27", "2026-11-28"]

    # WHEN the window is empty  THEN nothing is queried
    queries.days.clear()
    half_past = at("2026-11-28T00:30:00")
    assert store.count_created_between(half_past, half_past) == 0
    assert queries.days == []


def test_a_delete_that_meets_an_address_change_reads_the_user_again_and_frees_the_new_address(
    aws: Clients, resources: UserServiceResources
) -> None:
    other = make_store(aws, resources.table_name)
    ada = other.create(email="ada@example.com", name="Ada")

    def move_ada() -> None:
        other.update(ada.user_id, name=None, email="lovelace@example.com")

    race = Race(aws("dynamodb"), "transact_write_items", move_ada)
    store = make_store(aws, resources.table_name, race)

    store.delete(ada.user_id)

    assert store.get(ada.user_id) is None
    assert other.create(email="lovelace@example.com", name="New").email == "lovelace@example.com"
    assert other.create(email="ada@example.com", name="New").email == "ada@example.com"


def test_a_rename_of_a_user_deleted_meanwhile_is_not_found(
    aws: Clients, resources: UserServiceResources
) -> None:
    other = make_store(aws, resources.table_name)
    ada = other.create(email="ada@example.com", name="Ada")

    def delete_ada() -> None:
        other.delete(ada.user_id)

    store = make_store(aws, resources.table_name, Race(aws("dynamodb"), "update_item", delete_ada))

    with pytest.raises(users.UserNotFoundError):
        store.update(ada.user_id, name="Countess", email=None)
    assert store.get(ada.user_id) is None, "the rename did not bring the user back"


def test_a_page_cut_short_by_dynamodb_is_filled_up_and_still_says_more_users_follow(
    aws: Clients, resources: UserServiceResources
) -> None:
    made = make_store(aws, resources.table_name)
    created = {made.create(email=f"u{i}@example.com", name="U").user_id for i in range(5)}
    short = ShortPages(aws("dynamodb"), size=2)
    store = make_store(aws, resources.table_name, short)

    first = store.list_page(limit=4, start_key=None)

    assert len(first.users) == 4 and first.next_key is not None
    assert short.limits == [5, 3, 1], "never asks for more than the page and one more"
    second = store.list_page(limit=4, start_key=first.next_key)
    assert second.next_key is None
    assert {u.user_id for u in [*first.users, *second.users]} == created
    assert store.get(second.users[0].user_id) == second.users[0]


def test_counts_of_all_users_leave_guards_out(
    aws: Clients, resources: UserServiceResources
) -> None:
    store = make_store(aws, resources.table_name)
    kept = [store.create(email=f"u{i}@example.com", name="U") for i in range(5)]
    store.delete(kept[0].user_id)

    assert store.exact_count() == 4
    assert store.approximate_count() == 4  # DescribeTable's e-mail index ItemCount


def test_the_approximate_count_is_the_email_indexs_item_count_whatever_other_indexes_say(
    aws: Clients, resources: UserServiceResources
) -> None:
    made = make_store(aws, resources.table_name)
    for i in range(3):
        made.create(email=f"u{i}@example.com", name="U")

    store = make_store(aws, resources.table_name, OtherIndexCount(aws("dynamodb"), count=999))

    assert store.approximate_count() == 3


def test_created_at_is_utc_with_microseconds_whatever_the_clock_zone(
    aws: Clients, resources: UserServiceResources
) -> None:
    local = datetime(2026, 11, 28, 10, 0, 0, 5, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=-5))
    )
    store = make_store(aws, resources.table_name, clock=lambda: local)
    user = store.create(email="tz@example.com", name="Z")
    assert user.created_at == "2026-11-28T10:00:00.000005Z"
    assert store.count_created_between(at("2026-11-28T10:00:00"), at("2026-11-28T10:00:01")) == 1
