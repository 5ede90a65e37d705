"""The environment scheduler at scale: API calls stay O(pages), and its own work per resource.

Runs the handler's scale_down, scale_up and report over 10,000 instances and 200 Auto
Scaling groups against in-memory fakes of the EC2, Auto Scaling and CloudWatch clients that
answer from prepared pages at once and count every request. What is timed is therefore the
scheduler's own work (selecting, batching, saving capacities, averaging, formatting), not
AWS's. Targets: one request per page and per batch, nothing per instance (1,000 instances
per DescribeInstances page, 50 per Stop/StartInstances, 500 queries per GetMetricData, 100
groups per page, two requests per group), and at most 1 ms of the scheduler's own time per
resource.

    .venv/bin/python benchmarks/env_scheduler.py [--instances 10000] [--groups 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "opskit" / "layers" / "common" / "python"))

MAX_US_PER_RESOURCE = 1000.0
ENVIRONMENT = "dev"


def load_handler() -> ModuleType:
    path = REPO / "opskit" / "functions" / "env_scheduler" / "app.py"
    spec = importlib.util.spec_from_file_location("env_scheduler_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Paginator:
    def __init__(self, pages: Any) -> None:
        self._pages = pages

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield from self._pages(**kwargs)


class Fake:
    """EC2, Auto Scaling and CloudWatch in one, from memory; counts requests by operation."""

    def __init__(self, instances: int, groups: int) -> None:
        self.calls: Counter[str] = Counter()
        tags = [
            {"Key": "Environment", "Value": ENVIRONMENT},
            {"Key": "AutoScale", "Value": "true"},
        ]
        self.instances: dict[str, dict[str, Any]] = {
            f"i-{n:017x}": {
                "InstanceId": f"i-{n:017x}",
                "InstanceType": "t3.micro",
                "RootDeviceType": "ebs",
                "State": {"Name": "running"},
                "Tags": [*tags, {"Key": "Name", "Value": f"box-{n}"}],
            }
            for n in range(instances)
        }
        self.groups: dict[str, dict[str, Any]] = {
            f"asg-{n}": {
                "AutoScalingGroupName": f"asg-{n}",
                "MinSize": 1,
                "MaxSize": 4,
                "DesiredCapacity": 2,
                "Instances": [],
                "Tags": list(tags),
            }
            for n in range(groups)
        }

    def get_paginator(self, operation: str) -> Paginator:
        return Paginator(getattr(self, f"_{operation}"))

    def _describe_instances(self, Filters: Any, PaginationConfig: Any) -> Iterator[Any]:
        """By state (the tagged ones of a run) or by id (scale_up watching what it started)."""
        wanted = {f["Name"]: set(f["Values"]) for f in Filters}
        chosen = [
            i
            for i in self.instances.values()
            if i["State"]["Name"] in wanted.get("instance-state-name", {i["State"]["Name"]})
            and i["InstanceId"] in wanted.get("instance-id", {i["InstanceId"]})
        ]
        size = PaginationConfig["PageSize"]
        for start in range(0, max(len(chosen), 1), size):
            self.calls["DescribeInstances"] += 1
            yield {"Reservations": [{"Instances": chosen[start : start + size]}]}

    def _describe_auto_scaling_groups(self, Filters: Any, PaginationConfig: Any) -> Iterator[Any]:
        groups = list(self.groups.values())
        size = PaginationConfig["PageSize"]
        for start in range(0, max(len(groups), 1), size):
            self.calls["DescribeAutoScalingGroups"] += 1
            yield {"AutoScalingGroups": groups[start : start + size]}

    def _get_metric_data(self, MetricDataQueries: Any, **_: Any) -> Iterator[Any]:
        self.calls["GetMetricData"] += 1
        yield {
            "MetricDataResults": [
                {"Id": q["Id"], "Values": [float(n % 40)]} for n, q in enumerate(MetricDataQueries)
            ]
        }

    def _set_state(self, ids: list[str], state: str) -> None:
        for instance_id in ids:
            self.instances[instance_id]["State"] = {"Name": state}

    def stop_instances(self, InstanceIds: list[str]) -> None:
        self.calls["StopInstances"] += 1
        self._set_state(InstanceIds, "stopped")

    def start_instances(self, InstanceIds: list[str]) -> None:
        self.calls["StartInstances"] += 1
        self._set_state(InstanceIds, "running")

    def create_or_update_tags(self, Tags: list[dict[str, Any]]) -> None:
        self.calls["CreateOrUpdateTags"] += 1
        for tag in Tags:
            self.groups[tag["ResourceId"]]["Tags"].append(
                {"Key": tag["Key"], "Value": tag["Value"]}
            )

    def delete_tags(self, Tags: list[dict[str, Any]]) -> None:
        self.calls["DeleteTags"] += 1
        for tag in Tags:
            group = self.groups[tag["ResourceId"]]
            group["Tags"] = [t for t in group["Tags"] if t["Key"] != tag["Key"]]

    def update_auto_scaling_group(self, AutoScalingGroupName: str, **sizes: int) -> None:
        self.calls["UpdateAutoScalingGroup"] += 1
        keys = {"MinSize": "MinSize", "MaxSize": "MaxSize", "DesiredCapacity": "DesiredCapacity"}
        for name, value in sizes.items():
            self.groups[AutoScalingGroupName][keys[name]] = value


def measure(
    handler: ModuleType, instances: int, groups: int, samples: int
) -> dict[str, tuple[float, Counter[str]]]:
    """Median wall time (s) and the requests of one run, per action."""
    times: dict[str, list[float]] = {"scale_down": [], "scale_up": [], "report": []}
    calls: dict[str, Counter[str]] = {}
    for _ in range(samples):
        fake = Fake(instances, groups)
        for action in ("report", "scale_down", "scale_up"):
            fake.calls.clear()
            start = time.perf_counter()
            if action == "report":
                handler.build_report(
                    fake, fake, environment=ENVIRONMENT, now=datetime.now(UTC)
                ).body()
            else:
                change = handler.scale_down if action == "scale_down" else handler.scale_up
                outcome = change(fake, fake, environment=ENVIRONMENT, dry_run=False)
                assert not outcome.failed and len(outcome.instances) == instances
                assert len(outcome.groups) == groups
            times[action].append(time.perf_counter() - start)
            calls[action] = Counter(fake.calls)
    return {action: (statistics.median(times[action]), calls[action]) for action in times}


def expected_calls(handler: ModuleType, instances: int, groups: int) -> dict[str, int]:
    """One request per page and per batch, two per group: O(pages), nothing per instance.
    scale_up then checks, a batch at a time, that what it started runs (here every
    instance runs at the first check)."""
    describe = math.ceil(instances / handler.INSTANCES_PER_PAGE)
    describe_groups = math.ceil(groups / handler.GROUPS_PER_PAGE)
    change = math.ceil(instances / handler.INSTANCES_PER_CALL)
    return {
        "report": describe + math.ceil(instances / handler.METRIC_QUERIES_PER_CALL),
        "scale_down": describe + change + describe_groups + 2 * groups,
        "scale_up": describe + 2 * change + describe_groups + 2 * groups,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()

    handler = load_handler()
    results = measure(handler, args.instances, args.groups, args.samples)
    expected = expected_calls(handler, args.instances, args.groups)
    resources = {
        "report": args.instances,
        "scale_down": args.instances + args.groups,
        "scale_up": args.instances + args.groups,
    }
    print(f"{args.instances} instances, {args.groups} groups, median of {args.samples} runs")
    verdicts = []
    for action, (seconds, calls) in results.items():
        per_resource = seconds * 1e6 / resources[action]
        total = sum(calls.values())
        print(
            f"{action:<11} {seconds * 1000:8.1f} ms  {per_resource:7.1f} us/resource  "
            f"{total:5d} requests (pages and batches: {expected[action]}): "
            + ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
        )
        verdicts.append(
            (
                f"env_scheduler_{action}_us_per_resource",
                f"{per_resource:.1f}",
                f"{MAX_US_PER_RESOURCE:g}",
                per_resource <= MAX_US_PER_RESOURCE,
            )
        )
        verdicts.append(
            (
                f"env_scheduler_{action}_requests",
                str(total),
                str(expected[action]),
                total <= expected[action],
            )
        )
    for name, figure, target, ok in verdicts:
        print(f"RESULT {name} {figure} {target} {'ok' if ok else 'missed'}")
    return 0 if all(ok for *_, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
