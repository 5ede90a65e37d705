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


class Flaky:
    """moto's client, with scripted trouble for TransactWriteItems."""

    def __init__(self, real: Any, *, conflicts: int = 0, replay_first: bool = False) -> None:
        self._real = real
        self.conflicts = conflicts
        self.replay_first = replay_first
        self.transactions = 0

    def transact_write_items(self, **request: Any) -> Any:
        self.transactions += 1
        if self.conflicts:
            self.conflicts -= 1
            raise conflict()
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


def test_conflicts_beyond_the_attempts_are_contention_and_the_api_says_503(
    aws: Clients, resources: UserServiceResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every attempt conflicts
    flaky = Flaky(aws("dynamodb"), conflicts=100)
    store = make_store(aws, resources.table_name, flaky)

    # WHEN a user is created through the store  THEN ContentionError after 5 attempts
    with pytest.raises(users.ContentionError):
        store.create(email="ada@example.com", name="Ada")
    assert flaky.transactions == users.TRANSACTION_ATTEMPTS

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
