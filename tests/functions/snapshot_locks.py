"""DescribeLockedSnapshots, which moto does not implement, answered on a handler's own EC2
client from a test's table of locks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.awsrequest import AWSResponse


def answer_locked_snapshots(handler_ec2: Any, locks: Mapping[str, str], owner_id: str) -> None:
    """Makes `handler_ec2` answer DescribeLockedSnapshots from `locks` (snapshot id -> lock
    state, read at each call), honouring the request's `lock-state` filter, in one page."""
    request: dict[str, Any] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        request.clear()
        request.update(params)

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        wanted = {
            value
            for selection in request.get("Filters", [])
            if selection["Name"] == "lock-state"
            for value in selection["Values"]
        }
        found = [
            {"SnapshotId": snapshot_id, "LockState": state, "OwnerId": owner_id}
            for snapshot_id, state in locks.items()
            if not wanted or state in wanted
        ]
        return AWSResponse("", 200, {}, None), {"Snapshots": found}

    events = handler_ec2.meta.events
    events.register("before-parameter-build.ec2.DescribeLockedSnapshots", remember)
    events.register("before-call.ec2.DescribeLockedSnapshots", answer)
