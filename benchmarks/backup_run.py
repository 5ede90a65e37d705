"""The backup function's own cost per resource, and how many listing calls a large account takes.

One run of `run_backup` and `report` over an account of 2,000 tagged instances (4,000
volumes), 300 DB instances, 100 DB clusters, and 8,000 EBS, 2,000 DB and 700 cluster
snapshots (half of them past retention; of the expired EBS ones, 20 an AMI uses and 20
locked), served by in-memory fakes of the EC2 and RDS clients that answer at once and
paginate like AWS (1,000 instances or snapshots per page, 100 RDS records per page). What
is timed is therefore the function's own work: selecting, naming, tagging, comparing
times, collecting results and writing the report.

Figures: microseconds of overhead per item handled (each volume or database snapshotted
and each snapshot examined), and API calls by operation; listing calls must stay
O(pages), i.e. ceil(items / page size) per listing. Exits non-zero if a target is missed.

    .venv/bin/python benchmarks/backup_run.py [--samples 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "opskit" / "layers" / "common" / "python"))
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")

ENVIRONMENT = "prod"
INSTANCES, VOLUMES_PER_INSTANCE = 2000, 2
DATABASES, CLUSTERS = 300, 100
EBS_SNAPSHOTS, DB_SNAPSHOTS, CLUSTER_SNAPSHOTS = 8000, 2000, 700
EC2_PAGE, RDS_PAGE = 1000, 100
PROTECTED = 20
"""Expired EBS snapshots an AMI uses, and as many under a lock: kept, not deleted."""
MAX_MICROSECONDS_PER_ITEM = 1000.0
NOW = datetime(2026, 11, 28, 2, tzinfo=UTC)


def load_handler() -> Any:
    path = REPO / "opskit" / "functions" / "backup" / "app.py"
    spec = importlib.util.spec_from_file_location("opskit_function_backup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tags(**values: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


OWNED = {"Environment": ENVIRONMENT, "AutomatedBackup": "true", "CreatedBy": "opskit-backup"}


class Paginator:
    def __init__(self, calls: Counter[str], operation: str, key: str, items: list[Any], size: int):
        self.calls, self.operation, self.key, self.items, self.size = (
            calls,
            operation,
            key,
            items,
            size,
        )

    def paginate(self, **_: Any) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self.items), self.size):
            self.calls[self.operation] += 1
            yield {self.key: self.items[start : start + self.size]}


class FakeEc2:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.reservations = [
            {
                "Instances": [
                    {
                        "InstanceId": f"i-{i:017x}",
                        "Tags": tags(Name=f"web-{i}", Environment=ENVIRONMENT, Backup="true"),
                        "BlockDeviceMappings": [
                            {
                                "DeviceName": f"/dev/sd{chr(97 + d)}",
                                "Ebs": {"VolumeId": f"vol-{i:08x}{d:09x}"},
                            }
                            for d in range(VOLUMES_PER_INSTANCE)
                        ],
                    }
                ]
            }
            for i in range(INSTANCES)
        ]
        self.snapshots = [
            {
                "SnapshotId": f"snap-{i:017x}",
                "VolumeId": f"vol-{i:017x}",
                "State": "completed",
                "StartTime": NOW - timedelta(days=3 if i % 2 else 30),
                "Tags": tags(**OWNED, VolumeId=f"vol-{i:017x}"),
            }
            for i in range(EBS_SNAPSHOTS)
        ]

        self.images = [
            {"ImageId": f"ami-{i:017x}", "BlockDeviceMappings": [{"Ebs": {"SnapshotId": s}}]}
            for i, s in enumerate(self._expired_ids(0, PROTECTED))
        ]
        self.locks = [{"SnapshotId": s} for s in self._expired_ids(PROTECTED, PROTECTED)]

    @staticmethod
    def _expired_ids(skip: int, count: int) -> list[str]:
        """Ids of snapshots past retention: the even ones, 30 days old."""
        return [f"snap-{i:017x}" for i in range(0, EBS_SNAPSHOTS, 2)][skip : skip + count]

    def get_paginator(self, name: str) -> Paginator:
        if name == "describe_instances":
            return Paginator(self.calls, name, "Reservations", self.reservations, EC2_PAGE)
        if name == "describe_images":
            return Paginator(self.calls, name, "Images", self.images, EC2_PAGE)
        return Paginator(self.calls, name, "Snapshots", self.snapshots, EC2_PAGE)

    def describe_locked_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["describe_locked_snapshots"] += 1
        return {"Snapshots": self.locks}

    def create_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["create_snapshot"] += 1
        return {"SnapshotId": f"snap-new{self.calls['create_snapshot']:012x}"}

    def delete_snapshot(self, **kwargs: Any) -> None:
        self.calls["delete_snapshot"] += 1


class FakeRds:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        selected = tags(Environment=ENVIRONMENT, Backup="true")
        self.listings = {
            "describe_db_instances": (
                "DBInstances",
                [
                    {"DBInstanceIdentifier": f"orders-{i}", "TagList": selected}
                    for i in range(DATABASES)
                ],
            ),
            "describe_db_clusters": (
                "DBClusters",
                [
                    {"DBClusterIdentifier": f"ledger-{i}", "TagList": selected}
                    for i in range(CLUSTERS)
                ],
            ),
            "describe_db_snapshots": ("DBSnapshots", self._snapshots("DB", DB_SNAPSHOTS)),
            "describe_db_cluster_snapshots": (
                "DBClusterSnapshots",
                self._snapshots("DBCluster", CLUSTER_SNAPSHOTS),
            ),
        }

    @staticmethod
    def _snapshots(kind: str, count: int) -> list[dict[str, Any]]:
        return [
            {
                f"{kind}SnapshotIdentifier": f"db-{i}-opskit-20261101-020000",
                f"{'DBInstance' if kind == 'DB' else 'DBCluster'}Identifier": f"db-{i}",
                "Status": "available",
                "SnapshotCreateTime": NOW - timedelta(days=3 if i % 2 else 30),
                "TagList": tags(**OWNED),
            }
            for i in range(count)
        ]

    def get_paginator(self, name: str) -> Paginator:
        key, items = self.listings[name]
        return Paginator(self.calls, name, key, items, RDS_PAGE)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith(("create_", "delete_")):
            raise AttributeError(name)

        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls[name] += 1
            return {}

        return call


def one_run(app: Any) -> tuple[float, Counter[str], int]:
    ec2, rds = FakeEc2(), FakeRds()
    request = app.Request(backup_type="all", environment=ENVIRONMENT, dry_run=False)
    started = time.perf_counter()
    run = app.run_backup(
        request, ec2=ec2, rds=rds, now=NOW, retention_days=7, deadline=app.Deadline(900)
    )
    app.report(run)
    elapsed = time.perf_counter() - started
    assert not run.failed, run.failed[:3]
    return elapsed, ec2.calls + rds.calls, len(run.created) + len(run.deleted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    app = load_handler()
    app.logger.setLevel("WARNING")  # per-item skip notes would otherwise be printed

    one_run(app)  # warm-up
    samples = [one_run(app) for _ in range(args.samples)]
    elapsed = statistics.median(s[0] for s in samples)
    calls = samples[0][1]
    items = (
        INSTANCES * VOLUMES_PER_INSTANCE
        + DATABASES
        + CLUSTERS
        + EBS_SNAPSHOTS
        + DB_SNAPSHOTS
        + CLUSTER_SNAPSHOTS
    )
    per_item_us = elapsed / items * 1e6
    expected_pages = {
        "describe_instances": math.ceil(INSTANCES / EC2_PAGE),
        "describe_snapshots": math.ceil(EBS_SNAPSHOTS / EC2_PAGE),
        "describe_images": 1,
        "describe_locked_snapshots": 1,
        "describe_db_instances": math.ceil(DATABASES / RDS_PAGE),
        "describe_db_clusters": math.ceil(CLUSTERS / RDS_PAGE),
        "describe_db_snapshots": math.ceil(DB_SNAPSHOTS / RDS_PAGE),
        "describe_db_cluster_snapshots": math.ceil(CLUSTER_SNAPSHOTS / RDS_PAGE),
    }
    listing_calls = sum(calls[name] for name in expected_pages)
    pages_ok = all(calls[name] == pages for name, pages in expected_pages.items())

    print(f"items handled per run:      {items} ({samples[0][2]} created or deleted)")
    print(f"run + report, median of {args.samples}: {elapsed * 1000:.0f} ms")
    verdict = "ok" if per_item_us <= MAX_MICROSECONDS_PER_ITEM else "MISSED"
    print(f"overhead per item:          {per_item_us:.1f} us  (target <= 1000 us)  {verdict}")
    print("API calls by operation:")
    for name, count in sorted(calls.items()):
        pages = expected_pages.get(name)
        note = f"  (pages: {pages})" if pages is not None else ""
        print(f"  {name:32s} {count:6d}{note}")
    print(
        f"listing calls:              {listing_calls} (one per page: {'yes' if pages_ok else 'NO'})"
    )
    for name, figure, target, ok in [
        (
            "backup_overhead_us_per_item",
            f"{per_item_us:.1f}",
            MAX_MICROSECONDS_PER_ITEM,
            per_item_us <= MAX_MICROSECONDS_PER_ITEM,
        ),
        ("backup_listing_calls", str(listing_calls), sum(expected_pages.values()), pages_ok),
    ]:
        print(f"RESULT {name} {figure} {target:g} {'ok' if ok else 'missed'}")
    return 0 if per_item_us <= MAX_MICROSECONDS_PER_ITEM and pages_ok else 1


if __name__ == "__main__":
    sys.exit(main())
