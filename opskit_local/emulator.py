"""moto's server on 127.0.0.1 as a local AWS: one setup for `make api`, `make local`,
`make invoke` and the tests.

Handlers reach it exactly as they reach AWS, through ``AWS_ENDPOINT_URL``; `environment`
gives the variables (endpoint, region, throwaway credentials) for that.

moto runs in this process (ThreadedMotoServer), which lets `apply_fidelity_fixes` close
two gaps between moto and DynamoDB that the functions depend on:

- moto's writes are not isolated. A conditional PutItem or UpdateItem reads the item,
  evaluates the condition and then writes, so two concurrent writes to one item can both
  pass `attribute_not_exists`; TransactWriteItems checks and writes item by item, and on
  cancellation restores a copy of the whole table, which can erase a concurrent request's
  committed writes. DynamoDB's conditional writes are atomic and its transactions
  serializable, so the emulator runs one DynamoDB request at a time (clients still send
  them concurrently);
- DynamoDB's DescribeTable reports each global secondary index's ItemCount; moto leaves
  it out. The emulator adds it (counted live, where AWS refreshes it about every 6 h).

It also answers what moto does not implement and the functions call: EC2's
DescribeLockedSnapshots, with no locked snapshot (the emulator cannot lock one).

And one of speed: to undo a cancelled transaction, moto deep-copies every table it
touches before it starts, which made each write cost more the more items a table held
(over 100 ms at a few hundred items). With requests serialized, only the items a
transaction names can change while it runs, so the emulator saves and restores just
those, for tables without a stream (whose records moto would also have to roll back).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

DEFAULT_REGION = "eu-west-1"
ACCOUNT_ID = "123456789012"
"""The account moto answers for."""

_dynamodb_lock = threading.RLock()
_fixes_lock = threading.Lock()
_fixed = False


def apply_fidelity_fixes() -> None:
    """Makes this process's moto behave like DynamoDB where the user service relies on it."""
    global _fixed
    with _fixes_lock:
        if _fixed:
            return
        from moto.dynamodb.models.table import Table
        from moto.dynamodb.responses import DynamoHandler

        call_action = DynamoHandler.call_action

        @functools.wraps(call_action)
        def one_at_a_time(self: Any) -> Any:
            with _dynamodb_lock:
                return call_action(self)

        describe = Table.describe

        @functools.wraps(describe)
        def with_index_counts(self: Any, base_key: str = "TableDescription") -> Any:
            result = describe(self, base_key)
            for index in result[base_key].get("GlobalSecondaryIndexes") or []:
                index.setdefault("ItemCount", len(self.has_idx_items(index["IndexName"])))
            return result

        DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]
        Table.describe = with_index_counts  # type: ignore[method-assign]
        _snapshot_only_touched_items()
        _answer_describe_locked_snapshots()
        _fixed = True


def _answer_describe_locked_snapshots() -> None:
    from moto.ec2.responses import EC2Response

    def describe_locked_snapshots(self: Any) -> str:
        return (
            '<DescribeLockedSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><snapshotSet/>"
            "</DescribeLockedSnapshotsResponse>"
        )

    EC2Response.describe_locked_snapshots = describe_locked_snapshots  # type: ignore[attr-defined]


def _snapshot_only_touched_items() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class TablesByReference:
        """moto's ``copy`` inside a transaction: tables are not copied, anything else is."""

        def deepcopy(self, value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    by_reference = TablesByReference()
    transact = models.DynamoDBBackend.transact_write_items

    @functools.wraps(transact)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        touched = []
        for entry in transact_items:
            if not isinstance(entry, dict) or len(entry) != 1:
                return transact(self, transact_items)
            (operation, body), *_ = entry.items()
            table = self.tables.get(body.get("TableName"))
            key = body.get("Item" if operation == "Put" else "Key") or {}
            if table is None or table.stream_shard is not None or table.hash_key_attr not in key:
                return transact(self, transact_items)
            range_key = (
                DynamoType(key[table.range_key_attr])
                if table.range_key_attr and table.range_key_attr in key
                else None
            )
            touched.append((table, DynamoType(key[table.hash_key_attr]), range_key))
        saved = [(t, h, r, copy.deepcopy(t.get_item(h, r))) for t, h, r in touched]
        models.copy = by_reference  # type: ignore[assignment]
        try:
            return transact(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(saved):
                home = table.items[hash_key] if range_key is not None else table.items
                slot = range_key if range_key is not None else hash_key
                if item is None:
                    home.pop(slot, None)
                else:
                    home[slot] = item
            raise
        finally:
            models.copy = copy

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


class Emulator:
    """A local AWS on 127.0.0.1 (port 0: any free port). Use as a context manager."""

    def __init__(self, *, port: int = 0, region: str = DEFAULT_REGION) -> None:
        self.region = region
        self._port = port
        self._server: ThreadedMotoServer | None = None
        self.endpoint_url = ""

    def start(self) -> Emulator:
        """Imports moto only now: code that uses a running emulator never needs it."""
        os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # an empty account
        from moto.server import ThreadedMotoServer

        apply_fidelity_fixes()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per AWS call
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """Variables that point boto3 (and so any handler) at this emulator."""
        return environment(self.endpoint_url, region=self.region)

    def client(self, service_name: str) -> Any:
        """A boto3 client of this emulator, independent of the process environment."""
        return client(service_name, self.endpoint_url, region=self.region)


def client(service_name: str, endpoint_url: str, *, region: str = DEFAULT_REGION) -> Any:
    """A boto3 client of the emulator at that URL, independent of the process environment."""
    import boto3

    return boto3.client(
        service_name,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def environment(endpoint_url: str, *, region: str = DEFAULT_REGION) -> dict[str, str]:
    """``AWS_ENDPOINT_URL``, region and throwaway credentials for the emulator at that URL."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
