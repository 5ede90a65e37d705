"""The user service's data model: one DynamoDB table, users and e-mail guard items.

Table design (the construct builds the table from this; the README repeats it)
==============================================================================

Table ``USERS_TABLE``: partition key ``user_id`` (S), no sort key, on-demand, streams
NEW_AND_OLD_IMAGES. Two item types share it, told apart by ``item_type``:

``item_type = "user"``, one per user, ``user_id`` a lower-case UUID4:
    ``user_id`` S, ``item_type`` S, ``email`` S (lower case), ``name`` S,
    ``created_at`` S (``2026-11-28T13:05:01.123456Z``, UTC, fixed width, so string order
    is time order), ``created_day`` S (``2026-11-28``, the UTC day of ``created_at``),
    ``updated_at`` S (same format as ``created_at``).

``item_type = "email_guard"``, one per e-mail address in use:
    ``user_id`` S = ``"EMAIL#" + email`` (``#`` never occurs in a UUID, so the two key
    spaces cannot meet), ``item_type`` S, ``owner_id`` S (the owning user's id).
    Guards carry neither ``email`` nor ``created_day``, so they are in no index.

Global secondary indexes, both sparse (users only), both projecting ALL:

``email-index``: partition key ``email`` (S). ``GET /users?email=`` queries it; never a
    scan with a filter. Its ``ItemCount`` (DescribeTable) is the user count the metrics
    job reports.
``created-index``: partition key ``created_day`` (S), sort key ``created_at`` (S). A
    time window [start, end) is one Query per UTC day it touches, with ``created_at
    BETWEEN``; it reads only the users created in the window. ``GET /users`` pages
    through it with Scan, so page tokens carry no e-mail address.

Why guard items: a GSI is eventually consistent and cannot enforce uniqueness. Every
write that takes, moves or frees an address is one TransactWriteItems over the user
and its guards, each guard put conditioned on ``attribute_not_exists(user_id)``, so of
two concurrent creates with one address exactly one commits, whatever the timing.
A day per ``created-index`` partition keeps a day's sign-ups on one partition (about
1,000 writes/s per partition); a service expecting more would add a shard suffix.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

USER = "user"
EMAIL_GUARD = "email_guard"
GUARD_PREFIX = "EMAIL#"
EMAIL_INDEX = "email-index"
CREATED_INDEX = "created-index"
CREATED_INDEX_KEY = ("user_id", "created_day", "created_at")
"""The attributes of a ``created-index`` position (LastEvaluatedKey of a Scan on it)."""

TRANSACTION_ATTEMPTS = 5
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
_DAY = "%Y-%m-%d"


class UserNotFoundError(LookupError):
    """No user has this id."""


class EmailTakenError(ValueError):
    """Another user has this e-mail address."""


class ContentionError(RuntimeError):
    """Concurrent writes to the same items kept cancelling ours; the caller may retry."""


class IntegrityError(RuntimeError):
    """Stored items contradict the model (a guard owned by someone else than expected)."""


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    name: str
    created_at: str
    updated_at: str

    def as_json(self) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Page:
    users: list[User]
    next_key: dict[str, str] | None
    """Where the next page starts (string attributes), or None on the last page."""


def timestamp(moment: datetime) -> str:
    """``moment`` in the stored format: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP)


def guard_key(email: str) -> dict[str, Any]:
    return {"user_id": {"S": GUARD_PREFIX + email}}


def _user_from_item(item: Mapping[str, Any]) -> User:
    return User(
        user_id=item["user_id"]["S"],
        email=item["email"]["S"],
        name=item["name"]["S"],
        created_at=item["created_at"]["S"],
        updated_at=item["updated_at"]["S"],
    )


def _strings(key: Mapping[str, Any]) -> dict[str, str]:
    return {name: value["S"] for name, value in key.items()}


def _cancellation_codes(error: ClientError) -> list[str] | None:
    """Per-operation codes of a cancelled transaction, or None for any other error."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = error.response.get("CancellationReasons") or []
    return [str(reason.get("Code") or "None") for reason in reasons]


def _cancellation_item(error: ClientError, index: int) -> Mapping[str, Any]:
    reasons = error.response.get("CancellationReasons") or []
    return (reasons[index].get("Item") or {}) if index < len(reasons) else {}


class UserStore:
    """Users in one DynamoDB table, through a low-level client (no resource layer to load)."""

    def __init__(
        self,
        *,
        table_name: str,
        dynamodb: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = TRANSACTION_ATTEMPTS,
    ) -> None:
        self.table_name = table_name
        self._db = dynamodb
        self._clock = clock
        self._new_id = new_id
        self._sleep = sleep
        self._attempts = attempts

    # --- reads -----------------------------------------------------------------------

    def get(self, user_id: str) -> User | None:
        response = self._db.get_item(
            TableName=self.table_name, Key={"user_id": {"S": user_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item or item.get("item_type", {}).get("S") != USER:
            return None
        return _user_from_item(item)

    def list_page(self, *, limit: int, start_key: Mapping[str, str] | None) -> Page:
        """Up to ``limit`` users in index order; a full page only ever precedes more users."""
        return self._page(
            self._db.scan, {"IndexName": CREATED_INDEX}, CREATED_INDEX_KEY, limit, start_key
        )

    def find_by_email(self, email: str, *, limit: int, start_key: Mapping[str, str] | None) -> Page:
        """Users whose (lower-case) address is ``email``: a Query on the e-mail index."""
        return self._page(
            self._db.query,
            {
                "IndexName": EMAIL_INDEX,
                "KeyConditionExpression": "email = :email",
                "ExpressionAttributeValues": {":email": {"S": email}},
            },
            ("user_id", "email"),
            limit,
            start_key,
        )

    def _page(
        self,
        call: Callable[..., Any],
        request: dict[str, Any],
        key_attributes: tuple[str, ...],
        limit: int,
        start_key: Mapping[str, str] | None,
    ) -> Page:
        """Reads one item past ``limit`` so that the last page never carries a next key."""
        items: list[Mapping[str, Any]] = []
        exclusive_start = {k: {"S": v} for k, v in start_key.items()} if start_key else None
        while True:
            kwargs = {**request, "TableName": self.table_name, "Limit": limit + 1 - len(items)}
            if exclusive_start:
                kwargs["ExclusiveStartKey"] = exclusive_start
            response = call(**kwargs)
            items.extend(response.get("Items", []))
            exclusive_start = response.get("LastEvaluatedKey")
            if len(items) > limit or not exclusive_start:
                break
        if len(items) <= limit:
            return Page([_user_from_item(item) for item in items], None)
        shown = items[:limit]
        last = shown[-1]
        return Page(
            [_user_from_item(item) for item in shown],
            {name: last[name]["S"] for name in key_attributes},
        )

    def count_created_between(self, start: datetime, end: datetime) -> int:
        """Users created in [start, end): one Query (Select=COUNT) per UTC day touched."""
        if end <= start:
            return 0
        first = timestamp(start)
        last = timestamp(end - timedelta(microseconds=1))
        total = 0
        for day in _days(start, end):
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": CREATED_INDEX,
                "Select": "COUNT",
                "KeyConditionExpression": "created_day = :day AND created_at BETWEEN :a AND :b",
                "ExpressionAttributeValues": {
                    ":day": {"S": day},
                    ":a": {"S": first},
                    ":b": {"S": last},
                },
            }
            for response in self._db.get_paginator("query").paginate(**request):
                total += int(response.get("Count", 0))
        return total

    def approximate_count(self) -> int:
        """The e-mail index's ItemCount from DescribeTable: free, refreshed about every 6 h."""
        table = self._db.describe_table(TableName=self.table_name)["Table"]
        for index in table.get("GlobalSecondaryIndexes") or []:
            if index.get("IndexName") == EMAIL_INDEX:
                if "ItemCount" not in index:
                    raise IntegrityError(f"DescribeTable gave no ItemCount for {EMAIL_INDEX}")
                return int(index["ItemCount"])
        raise IntegrityError(f"table {self.table_name} has no index {EMAIL_INDEX}")

    def exact_count(self) -> int:
        """Every user counted: a Select=COUNT Scan of the e-mail index (reads all of it)."""
        request = {"TableName": self.table_name, "IndexName": EMAIL_INDEX, "Select": "COUNT"}
        pages = self._db.get_paginator("scan").paginate(**request)
        return sum(int(page.get("Count", 0)) for page in pages)

    # --- writes ----------------------------------------------------------------------

    def create(self, *, email: str, name: str) -> User:
        """A new user owning ``email``; EmailTakenError if another user has it."""
        user_id = self._new_id()
        now = self._clock()
        stamp = timestamp(now)
        user = User(user_id=user_id, email=email, name=name, created_at=stamp, updated_at=stamp)
        item = {
            "user_id": {"S": user_id},
            "item_type": {"S": USER},
            "email": {"S": email},
            "name": {"S": name},
            "created_at": {"S": stamp},
            "created_day": {"S": now.astimezone(UTC).strftime(_DAY)},
            "updated_at": {"S": stamp},
        }
        operations = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(user_id)",
                }
            },
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": self._guard(email, user_id),
                    "ConditionExpression": "attribute_not_exists(user_id)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
        cancelled = self._transact(operations)
        if cancelled is None:
            return user
        owner = _cancellation_item(cancelled, 1).get("owner_id", {}).get("S")
        if owner == user_id:  # an earlier attempt of ours committed; its answer was lost
            return user
        if owner is not None:
            raise EmailTakenError(email)
        raise IntegrityError(f"create of {user_id} cancelled: {_cancellation_codes(cancelled)}")

    def update(self, user_id: str, *, name: str | None, email: str | None) -> User:
        """Changes name and/or address, moving the address's guard in the same transaction."""
        for _ in range(self._attempts):
            current = self.get(user_id)
            if current is None:
                raise UserNotFoundError(user_id)
            new_email = email if email is not None else current.email
            new_name = name if name is not None else current.name
            stamp = timestamp(self._clock())
            if new_email == current.email:
                return self._rename(current, new_name, stamp)
            operations = [
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": {"user_id": {"S": user_id}},
                        "UpdateExpression": "SET email = :new, #name = :name, updated_at = :now",
                        "ConditionExpression": "email = :old",
                        "ExpressionAttributeNames": {"#name": "name"},
                        "ExpressionAttributeValues": {
                            ":new": {"S": new_email},
                            ":old": {"S": current.email},
                            ":name": {"S": new_name},
                            ":now": {"S": stamp},
                        },
                    }
                },
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": self._guard(new_email, user_id),
                        "ConditionExpression": "attribute_not_exists(user_id)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                self._free_guard(current.email, user_id),
            ]
            cancelled = self._transact(operations)
            if cancelled is None:
                return User(user_id, new_email, new_name, current.created_at, stamp)
            codes = _cancellation_codes(cancelled) or []
            if _code(codes, 0) == "ConditionalCheckFailed":
                continue  # the user changed or went away since it was read: read it again
            if _code(codes, 1) == "ConditionalCheckFailed":
                raise EmailTakenError(new_email)
            raise IntegrityError(f"guard of {user_id}'s old address belongs to another user")
        raise ContentionError(f"user {user_id} kept changing during the update")

    def delete(self, user_id: str) -> None:
        """Deletes the user and frees its address in one transaction."""
        for _ in range(self._attempts):
            current = self.get(user_id)
            if current is None:
                raise UserNotFoundError(user_id)
            operations = [
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {"user_id": {"S": user_id}},
                        "ConditionExpression": "email = :email",
                        "ExpressionAttributeValues": {":email": {"S": current.email}},
                    }
                },
                self._free_guard(current.email, user_id),
            ]
            cancelled = self._transact(operations)
            if cancelled is None:
                return
            if _code(_cancellation_codes(cancelled) or [], 0) == "ConditionalCheckFailed":
                continue  # the user changed or went away since it was read: read it again
            raise IntegrityError(f"guard of {user_id}'s address belongs to another user")
        raise ContentionError(f"user {user_id} kept changing during the delete")

    # --- helpers ---------------------------------------------------------------------

    def _rename(self, current: User, name: str, stamp: str) -> User:
        try:
            response = self._with_conflict_retries(
                lambda: self._db.update_item(
                    TableName=self.table_name,
                    Key={"user_id": {"S": current.user_id}},
                    UpdateExpression="SET #name = :name, updated_at = :now",
                    ConditionExpression="item_type = :user",
                    ExpressionAttributeNames={"#name": "name"},
                    ExpressionAttributeValues={
                        ":name": {"S": name},
                        ":now": {"S": stamp},
                        ":user": {"S": USER},
                    },
                    ReturnValues="ALL_NEW",
                )
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise UserNotFoundError(current.user_id) from None
            raise
        return _user_from_item(response["Attributes"])

    def _guard(self, email: str, owner_id: str) -> dict[str, Any]:
        return {**guard_key(email), "item_type": {"S": EMAIL_GUARD}, "owner_id": {"S": owner_id}}

    def _free_guard(self, email: str, owner_id: str) -> dict[str, Any]:
        """Deletes our guard; a missing one is fine, another user's is never touched."""
        return {
            "Delete": {
                "TableName": self.table_name,
                "Key": guard_key(email),
                "ConditionExpression": "attribute_not_exists(user_id) OR owner_id = :owner",
                "ExpressionAttributeValues": {":owner": {"S": owner_id}},
            }
        }

    def _transact(self, operations: list[dict[str, Any]]) -> ClientError | None:
        """Runs the transaction: None once committed, the cancellation if a condition failed.

        Cancellations for conflicts with concurrent transactions are retried with jittered
        backoff, each attempt with its own idempotency token (which the SDK's own retries
        of that attempt reuse); ContentionError once the attempts are spent.
        """
        for attempt in range(1, self._attempts + 1):
            try:
                self._db.transact_write_items(
                    TransactItems=operations, ClientRequestToken=str(uuid.uuid4())
                )
                return None
            except ClientError as error:
                codes = _cancellation_codes(error)
                if codes is not None and "ConditionalCheckFailed" in codes:
                    return error
                code = error.response.get("Error", {}).get("Code")
                conflict = code == "TransactionInProgressException" or (
                    codes is not None and "TransactionConflict" in codes
                )
                if not conflict:
                    raise
                if attempt < self._attempts:
                    self._sleep(_backoff(attempt))
        raise ContentionError("transaction kept conflicting with concurrent writes")

    def _with_conflict_retries(self, call: Callable[[], Any]) -> Any:
        for attempt in range(1, self._attempts + 1):
            try:
                return call()
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "TransactionConflictException":
                    raise
                if attempt < self._attempts:
                    self._sleep(_backoff(attempt))
        raise ContentionError("write kept conflicting with concurrent transactions")


def _code(codes: list[str], index: int) -> str:
    return codes[index] if index < len(codes) else "None"


def _backoff(attempt: int) -> float:
    ceiling: float = min(0.4, 0.025 * 2 ** (attempt - 1))
    return ceiling / 2 + random.random() * ceiling / 2


def _days(start: datetime, end: datetime) -> Iterator[str]:
    """The UTC days (``YYYY-MM-DD``) that [start, end) touches."""
    day = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    while day <= last:
        yield day.strftime(_DAY)
        day += timedelta(days=1)
