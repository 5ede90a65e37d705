"""The snapshot cleanup over 10,000 candidate snapshots: listing calls and overhead per snapshot.

Runs the real handler (``lambda_handler``: settings, Powertools logging and metrics, listing,
planning, deleting, the SNS report) against in-memory EC2 and SNS stand-ins that answer at
once and count every call. EC2's stand-in paginates like EC2 (at most ``MaxResults`` items
a page, ``NextToken``), which moto does not. With AWS's latency taken out, the wall time of
a run is the function's own overhead.

The account: 2,000 volumes, each with 5 expired snapshots made by the backup function and
1 recent one; among the expired, some are tagged Retention=permanent, referenced by an
AMI, made by AWS Backup or not owned. That is 10,000 candidates (older than the retention)
in 12,000 snapshots, 300 AMIs. A second size (20,000 candidates) shows that listing calls
grow with pages and the overhead per snapshot stays flat.

Also prints, for information only, the same run through a real botocore client with
``Stubber`` (request validation and botocore's event machinery per call, no network): SDK
cost, not the function's.

    .venv/bin/python benchmarks/snapshot_cleanup.py [--samples 5]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "opskit" / "functions" / "snapshot_cleanup" / "app.py"
LAYER = REPO / "opskit" / "layers" / "common" / "python"
MAX_MS_PER_SNAPSHOT = 1.0
ENVIRONMENT = "prod"
LISTING = ("describe_snapshots", "describe_images", "describe_locked_snapshots")
OWNED = [
    {"Key": "AutomatedBackup", "Value": "true"},
    {"Key": "CreatedBy", "Value": "opskit-backup"},
    {"Key": "Environment", "Value": ENVIRONMENT},
]


def load_handler() -> ModuleType:
    sys.path.insert(0, str(LAYER))
    spec = importlib.util.spec_from_file_location("snapshot_cleanup_app", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Account:
    snapshots: list[dict[str, Any]]
    images: list[dict[str, Any]]
    candidates: int


def make_account(volumes: int, *, now: datetime) -> Account:
    """``volumes`` volumes with 5 expired snapshots and 1 recent one each."""
    snapshots: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for v in range(volumes):
        for k in range(6):
            n = v * 6 + k
            tags = list(OWNED)
            description = "opskit backup"
            if k < 5 and n % 97 == 0:
                tags.append({"Key": "Retention", "Value": "permanent"})
            if k < 5 and n % 89 == 0:
                tags.append({"Key": "aws:backup:source-resource", "Value": f"vol-{v:017x}"})
                description = "This snapshot is created by the AWS Backup service."
            if k < 5 and n % 53 == 0:
                tags = []  # made by hand
            snapshots.append(
                {
                    "SnapshotId": f"snap-{n:017x}",
                    "VolumeId": f"vol-{v:017x}",
                    "StartTime": now - timedelta(days=1 if k == 5 else 40 + 10 * k),
                    "State": "completed",
                    "OwnerId": "123456789012",
                    "Description": description,
                    "Tags": tags,
                }
            )
    for i in range(volumes * 3 // 20):  # 300 AMIs per 2,000 volumes, 2 of 3 on expired ones
        referenced = snapshots[(i * 41) % len(snapshots)]["SnapshotId"]
        mappings = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": referenced}}]
        images.append({"ImageId": f"ami-{i:017x}", "BlockDeviceMappings": mappings})
    candidates = sum(1 for s in snapshots if s["StartTime"] < now - timedelta(days=30))
    return Account(snapshots=snapshots, images=images, candidates=candidates)


class Pages:
    """A paginator over a list, as EC2 pages: MaxResults items, then a NextToken."""

    def __init__(self, items: list[dict[str, Any]], key: str, calls: Counter[str], name: str):
        self.items, self.key, self.calls, self.name = items, key, calls, name

    def paginate(self, **params: Any) -> Any:
        size = params["PaginationConfig"]["PageSize"]
        assert 5 <= size <= 1000
        for start in range(0, max(len(self.items), 1), size):
            self.calls[self.name] += 1
            page: dict[str, Any] = {self.key: self.items[start : start + size]}
            if start + size < len(self.items):
                page["NextToken"] = str(start + size)
            yield page


class FakeEC2:
    """EC2 answering at once, counting calls."""

    def __init__(self, account: Account) -> None:
        self.snapshots = {s["SnapshotId"]: s for s in account.snapshots}
        self.images = account.images
        self.calls: Counter[str] = Counter()

    def get_paginator(self, name: str) -> Pages:
        if name == "describe_snapshots":
            return Pages(list(self.snapshots.values()), "Snapshots", self.calls, name)
        return Pages(self.images, "Images", self.calls, name)

    def describe_locked_snapshots(self, **_: Any) -> dict[str, Any]:
        """No snapshot is locked: one page."""
        self.calls["describe_locked_snapshots"] += 1
        return {"Snapshots": []}

    def delete_snapshot(self, *, SnapshotId: str) -> dict[str, Any]:
        self.calls["delete_snapshot"] += 1
        del self.snapshots[SnapshotId]
        return {}


class FakeSNS:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def publish(self, **message: Any) -> dict[str, str]:
        self.messages.append(message)
        return {"MessageId": str(len(self.messages))}


@dataclass
class Context:
    function_name: str = "snapshot-cleanup"
    function_version: str = "1"
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:x:PROD"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "benchmark"

    def get_remaining_time_in_millis(self) -> int:
        return 840_000


@dataclass
class Run:
    seconds: float
    result: dict[str, Any]
    calls: Counter[str]
    reports: int


def run_once(app: ModuleType, account: Account, *, dry_run: bool, ec2: Any = None) -> Run:
    fake = FakeEC2(account)
    sns = FakeSNS()
    vars(app).update(ec2_client=lambda: ec2 or fake, sns_client=lambda: sns)
    out = io.StringIO()  # Lambda's stdout is a pipe to CloudWatch Logs, not a terminal
    app.logger.registered_handler.setStream(out)
    with contextlib.redirect_stdout(out):
        start = time.perf_counter()
        result = app.lambda_handler({"dry_run": dry_run}, Context())
        seconds = time.perf_counter() - start
    return Run(seconds=seconds, result=result, calls=fake.calls, reports=len(sns.messages))


def stubbed_run(app: ModuleType, account: Account, due: list[str]) -> float:
    """The same run through a real botocore client with Stubber: SDK cost per call."""
    import boto3
    from botocore.stub import Stubber
    from opskit_common.snapshots import LOCKED_STATES  # the layer, on the path load_handler set

    ec2 = boto3.client(
        "ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(ec2)
    for start in range(0, len(account.snapshots), 1000):
        page: dict[str, Any] = {"Snapshots": account.snapshots[start : start + 1000]}
        params: dict[str, Any] = {"OwnerIds": ["self"], "MaxResults": 1000}
        if start:
            params["NextToken"] = str(start)
        if start + 1000 < len(account.snapshots):
            page["NextToken"] = str(start + 1000)
        stub.add_response("describe_snapshots", page, params)
    stub.add_response(
        "describe_images",
        {"Images": account.images},
        {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000},
    )
    stub.add_response(
        "describe_locked_snapshots",
        {"Snapshots": []},
        {"Filters": [{"Name": "lock-state", "Values": LOCKED_STATES}], "MaxResults": 1000},
    )
    for snapshot_id in due:
        stub.add_response("delete_snapshot", {}, {"SnapshotId": snapshot_id})
    with stub:
        run = run_once(app, account, dry_run=False, ec2=ec2)
        stub.assert_no_pending_responses()
    assert run.result["snapshot_ids"] == due
    return run.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument(
        "--volumes",
        type=int,
        nargs="+",
        default=[2000, 4000],
        help="account sizes, 5 candidates per volume; the first one's figures are judged",
    )
    args = parser.parse_args()
    os.environ.update(
        SNS_TOPIC_ARN="arn:aws:sns:eu-west-1:123456789012:opskit-reports",
        ENVIRONMENT=ENVIRONMENT,
        POWERTOOLS_LOG_LEVEL="INFO",
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="eu-west-1",
    )
    app = load_handler()
    now = datetime.now(UTC)
    ok = True
    figures: list[tuple[str, str, float, bool]] = []
    print(f"samples per figure: {args.samples} (median), fresh stand-ins each run")
    for volumes in args.volumes:
        account = make_account(volumes, now=now)
        listed, images = len(account.snapshots), len(account.images)
        run_once(app, account, dry_run=False)  # warm-up: first-call imports and caches
        for dry_run in (False, True):
            runs = [run_once(app, account, dry_run=dry_run) for _ in range(args.samples)]
            seconds = statistics.median(r.seconds for r in runs)
            last = runs[-1]
            per_snapshot_ms = seconds * 1000 / account.candidates
            pages = math.ceil(listed / 1000) + math.ceil(images / 1000) + 1  # + locked
            listing = sum(last.calls[name] for name in LISTING)
            label = f"{account.candidates:>6} candidates{' (dry run)' if dry_run else ''}"
            print(
                f"{label:<28} wall {seconds * 1000:8.1f} ms  "
                f"{per_snapshot_ms:6.3f} ms/snapshot  "
                f"listing calls {listing} (describe_snapshots "
                f"{last.calls['describe_snapshots']}, describe_images "
                f"{last.calls['describe_images']}, describe_locked_snapshots "
                f"{last.calls['describe_locked_snapshots']}; {listed} snapshots, {images} AMIs)  "
                f"delete calls {last.calls['delete_snapshot']}  "
                f"deleted {last.result['deleted_count']}  skipped {last.result['skipped']}  "
                f"remaining {last.result['remaining']}  reports {last.reports}"
            )
            if volumes == args.volumes[0]:
                name = "dry" if dry_run else "run"
                figures.append(
                    (
                        f"snapshot_cleanup_{name}_ms_per_snapshot",
                        f"{per_snapshot_ms:.3f}",
                        MAX_MS_PER_SNAPSHOT,
                        per_snapshot_ms <= MAX_MS_PER_SNAPSHOT,
                    )
                )
                if not dry_run:
                    figures.append(
                        ("snapshot_cleanup_listing_calls", str(listing), pages, listing <= pages)
                    )
                    due = last.result["snapshot_ids"]
                    sdk = stubbed_run(app, account, due)
                    print(
                        f"{'  through botocore Stubber':<28} wall {sdk * 1000:8.1f} ms  "
                        f"{sdk * 1000 / account.candidates:6.3f} ms/snapshot  "
                        "(informational: SDK validation and events per call, no network)"
                    )
    for name, figure, target, passed in figures:
        ok = ok and passed
        print(f"RESULT {name} {figure} {target:g} {'ok' if passed else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
