"""Environment scheduler: non-production instances and Auto Scaling groups off out of hours.

Invoked by EventBridge Scheduler (or by hand) with ``{"action": "scale_down" | "scale_up" |
"report", "environment": "<name>", "dry_run": false}``. Scaling touches only an environment
listed in ALLOWED_ENVIRONMENTS, and in it only what is tagged ``Environment=<name>``:
instances also tagged ``AutoScale=true``, and Auto Scaling groups. A group's capacity is
saved in a tag on the group before it goes to zero and restored from that tag, so running
either direction twice changes nothing more. The report only reads, for any environment.

Per-resource failures (a stop-protected instance, no capacity to start one) are reported,
counted in the FailedResources metric, and never stop the other resources; the handler
raises only when it can do no work at all, or is asked to scale an environment it may not.
A start can also fail after StartInstances returned (an EBS volume's KMS key the instance
may not use): scale_up watches the instances it started for a while and counts those that
stop again as failed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from botocore.exceptions import ClientError
from opskit_common.clients import client
from opskit_common.config import env_list, require_env
from opskit_common.events import MalformedEventError, optional_bool, require_str
from opskit_common.reports import bounded, publish
from opskit_common.startup import imports_done
from opskit_common.tags import as_dict

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "environment-scheduler"
logger = Logger(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "opskit", service=SERVICE
)

SCALE_DOWN = "scale_down"
SCALE_UP = "scale_up"
REPORT = "report"
ACTIONS = (SCALE_DOWN, SCALE_UP, REPORT)

ENVIRONMENT_TAG = "Environment"
AUTOSCALE_TAG = "AutoScale"
AUTOSCALE_ON = "true"
AUTOSCALE_OFF = "false"
"""A group tagged AutoScale=false is left alone (groups are scaled by default)."""
SAVED_CAPACITY_TAG = "opskit:saved-capacity"
"""Set on a group when it is scaled down, removed when it is scaled back up."""
GROUP_NAME_TAG = "aws:autoscaling:groupName"
"""EC2 Auto Scaling puts this on every instance it launches."""

IDLE_CPU_PERCENT = 5.0
CPU_WINDOW = timedelta(hours=24)
INSTANCES_PER_PAGE = 1000
GROUPS_PER_PAGE = 100
INSTANCES_PER_CALL = 50
"""Instances per StopInstances/StartInstances request."""
METRIC_QUERIES_PER_CALL = 500
"""GetMetricData takes at most 500 queries per request."""
REPORT_LINES = 500
START_WAIT_SECONDS = 45.0
"""How long scale_up watches the instances it started: one that cannot start (its EBS
volume's KMS key) goes from pending to stopped within seconds of the call."""
START_POLL_SECONDS = 5.0
START_WAIT_MARGIN_SECONDS = 120.0
"""Kept free before the timeout after the wait, for the failure report and the metric."""
STOPPED_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
USER_STOPPED = "Client.UserInitiatedShutdown"
"""The StateReason of the stop scale_down made: DescribeInstances may still show it for a
moment after the start (it is eventually consistent)."""
KMS_HINT = (
    " (an EBS volume's customer managed KMS key the function may not use? see ebs_encryption_keys)"
)

_CAPACITY = re.compile(r"^min=(\d+) max=(\d+) desired=(\d+)$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _utc_now
"""Where the report's window ends; replaced in tests."""
sleep: Callable[[float], None] = time.sleep
monotonic: Callable[[], float] = time.monotonic
"""How scale_up waits for started instances; replaced in tests."""


class RefusedEnvironmentError(RuntimeError):
    """Scaling was asked of an environment this function may not scale; nothing was touched."""


@dataclass(frozen=True)
class Request:
    action: str
    environment: str
    dry_run: bool


def parse_event(event: Any) -> Request:
    """The request an event makes, or MalformedEventError naming the field."""
    action = require_str(event, "action")
    if action not in ACTIONS:
        raise MalformedEventError(
            f"event field 'action' has invalid value {action!r:.40}; "
            f"valid choices: {', '.join(ACTIONS)}"
        )
    environment = require_str(event, "environment")
    if len(environment) > 256:
        raise MalformedEventError("event field 'environment' is longer than a tag value (256)")
    return Request(action, environment, optional_bool(event, "dry_run", default=False))


def allowed_environments() -> tuple[str, ...]:
    """ALLOWED_ENVIRONMENTS; unset or empty allows none."""
    return env_list("ALLOWED_ENVIRONMENTS")


def check_allowed(request: Request, allowed: Sequence[str]) -> None:
    """Raises before any AWS call when the environment may not be scaled."""
    if request.environment not in allowed:
        listed = ", ".join(allowed) or "none"
        raise RefusedEnvironmentError(
            f"refusing {request.action} of environment {request.environment!r}: it is not in "
            f"ALLOWED_ENVIRONMENTS ({listed}); nothing was touched"
        )


# --- capacities ------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    """An Auto Scaling group's size limits, as saved in its tag."""

    minimum: int
    maximum: int
    desired: int

    @classmethod
    def of(cls, group: dict[str, Any]) -> Capacity:
        return cls(group["MinSize"], group["MaxSize"], group["DesiredCapacity"])

    @classmethod
    def parse(cls, value: str) -> Capacity:
        match = _CAPACITY.match(value.strip())
        if match is None:
            raise ValueError(
                f"tag {SAVED_CAPACITY_TAG}={value[:60]!r} is not 'min=<n> max=<n> desired=<n>'"
            )
        capacity = cls(*(int(part) for part in match.groups()))
        if not capacity.minimum <= capacity.desired <= capacity.maximum:
            raise ValueError(f"tag {SAVED_CAPACITY_TAG}={value!r} is not min <= desired <= max")
        return capacity

    @property
    def is_zero(self) -> bool:
        return self.minimum == 0 and self.desired == 0

    def tag_value(self) -> str:
        return f"min={self.minimum} max={self.maximum} desired={self.desired}"

    def as_dict(self) -> dict[str, int]:
        return {"min": self.minimum, "max": self.maximum, "desired": self.desired}


# --- outcome ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a scale_down or scale_up did (or, in a dry run, would do)."""

    action: str
    environment: str
    dry_run: bool
    instances: list[str] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def skip(self, resource: str, reason: str) -> None:
        self.skipped.append({"resource": resource, "reason": reason})

    def warn(self, resource: str, warning: str) -> None:
        self.warnings.append({"resource": resource, "warning": warning})

    def fail(self, resource: str, error: Exception | str) -> None:
        self.failed.append({"resource": resource, "error": describe_error(error)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "environment": self.environment,
            "dry_run": self.dry_run,
            "instances": self.instances,
            "groups": self.groups,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "failed": self.failed,
        }


def describe_error(error: Exception | str) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'ClientError')}: {details.get('Message', '')}".strip()
    return str(error)


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- instances -------------------------------------------------------------------------


def instances(
    ec2: Any, *, environment: str, states: Sequence[str], autoscale_only: bool
) -> Iterator[dict[str, Any]]:
    """Instances of the environment in one of ``states``, every page."""
    filters = [
        {"Name": f"tag:{ENVIRONMENT_TAG}", "Values": [environment]},
        {"Name": "instance-state-name", "Values": list(states)},
    ]
    if autoscale_only:
        filters.append({"Name": f"tag:{AUTOSCALE_TAG}", "Values": [AUTOSCALE_ON]})
    paginator = ec2.get_paginator("describe_instances")
    for page in paginator.paginate(
        Filters=filters, PaginationConfig={"PageSize": INSTANCES_PER_PAGE}
    ):
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])


def not_schedulable(instance: dict[str, Any]) -> str | None:
    """Why the scheduler must not stop or start this instance by itself, if it must not."""
    group = as_dict(instance.get("Tags")).get(GROUP_NAME_TAG)
    if group:
        return f"in Auto Scaling group {group}, which would replace it; scaled with its group"
    if instance.get("InstanceLifecycle") == "spot":
        return "Spot Instance: one-time requests cannot be stopped; use an Auto Scaling group"
    if instance.get("RootDeviceType") == "instance-store":
        return "instance-store root volume: the instance cannot be stopped"
    return None


def change_instances(
    ec2: Any, instance_ids: Sequence[str], *, stop: bool, dry_run: bool, outcome: Outcome
) -> None:
    """Stops or starts in batches; a failed batch is retried one instance at a time, so one
    stop-protected instance costs only itself."""
    if dry_run:
        outcome.instances.extend(instance_ids)
        return
    call = ec2.stop_instances if stop else ec2.start_instances
    for batch in chunks(instance_ids, INSTANCES_PER_CALL):
        try:
            call(InstanceIds=list(batch))
            outcome.instances.extend(batch)
            continue
        except ClientError as error:
            if len(batch) == 1:
                outcome.fail(batch[0], error)
                continue
        for instance_id in batch:
            try:
                call(InstanceIds=[instance_id])
                outcome.instances.append(instance_id)
            except ClientError as error:
                outcome.fail(instance_id, error)


def scale_instances(ec2: Any, *, environment: str, stop: bool, outcome: Outcome) -> None:
    chosen: list[str] = []
    for instance in instances(
        ec2,
        environment=environment,
        states=["running"] if stop else ["stopped"],
        autoscale_only=True,
    ):
        reason = not_schedulable(instance)
        if reason is None:
            chosen.append(instance["InstanceId"])
        else:
            outcome.skip(instance["InstanceId"], reason)
    change_instances(ec2, chosen, stop=stop, dry_run=outcome.dry_run, outcome=outcome)


@dataclass(frozen=True)
class Waiting:
    """How long, and with which clock and sleep, scale_up watches the instances it started."""

    seconds: float = START_WAIT_SECONDS
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def described(ec2: Any, instance_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The instances, by id, every page (a filter: an id not yet visible is no error)."""
    found: dict[str, dict[str, Any]] = {}
    paginator = ec2.get_paginator("describe_instances")
    for batch in chunks(instance_ids, INSTANCES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "instance-id", "Values": list(batch)}],
            PaginationConfig={"PageSize": INSTANCES_PER_PAGE},
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    found[instance["InstanceId"]] = instance
    return found


def _start_failed(outcome: Outcome, instance_id: str, state: str, reason: dict[str, Any]) -> None:
    code = str(reason.get("Code") or "")
    why = str(reason.get("Message") or code or "no reason given")
    hint = KMS_HINT if code == "Client.InternalError" else ""
    if instance_id in outcome.instances:
        outcome.instances.remove(instance_id)
    outcome.fail(instance_id, f"started, then {state}: {why}{hint}")


def confirm_started(
    ec2: Any, instance_ids: Sequence[str], *, outcome: Outcome, waiting: Waiting
) -> None:
    """Watches started instances until each runs or stops again, or the wait ends.

    StartInstances answers `pending`; an instance whose EBS volume cannot be decrypted goes
    on to `stopped` (StateReason Client.InternalError) after the call returned, so it failed.
    One still showing scale_down's stop is watched on; one still `pending` at the end is
    slow, not failed: a warning. The wait is bounded, and so is the number of checks.
    """
    watching = list(instance_ids)
    last: dict[str, dict[str, Any]] = {}
    give_up_at = waiting.clock() + waiting.seconds
    while watching:
        last.update(described(ec2, watching))
        still = []
        for instance_id in watching:
            instance = last.get(instance_id, {})
            state = instance.get("State", {}).get("Name", "unknown")
            reason = instance.get("StateReason") or {}
            if state == "running":
                continue
            if state in STOPPED_STATES and reason.get("Code") != USER_STOPPED:
                _start_failed(outcome, instance_id, state, reason)
                continue
            still.append(instance_id)
        watching = still
        left = give_up_at - waiting.clock()
        if not watching or left <= 0:
            break
        waiting.sleep(min(START_POLL_SECONDS, left))
    for instance_id in watching:
        instance = last.get(instance_id, {})
        state = instance.get("State", {}).get("Name", "unknown")
        if state in STOPPED_STATES:
            _start_failed(outcome, instance_id, state, instance.get("StateReason") or {})
        else:
            outcome.warn(
                instance_id,
                f"still {state} {waiting.seconds:g} s after it was started; not confirmed running",
            )


# --- Auto Scaling groups ---------------------------------------------------------------


def groups(autoscaling: Any, *, environment: str) -> Iterator[dict[str, Any]]:
    """Auto Scaling groups tagged with the environment, every page."""
    paginator = autoscaling.get_paginator("describe_auto_scaling_groups")
    for page in paginator.paginate(
        Filters=[{"Name": f"tag:{ENVIRONMENT_TAG}", "Values": [environment]}],
        PaginationConfig={"PageSize": GROUPS_PER_PAGE},
    ):
        for group in page.get("AutoScalingGroups", []):
            if as_dict(group.get("Tags")).get(ENVIRONMENT_TAG) == environment:
                yield group


def _group_tag(name: str, value: str | None = None) -> dict[str, Any]:
    tag: dict[str, Any] = {
        "ResourceId": name,
        "ResourceType": "auto-scaling-group",
        "Key": SAVED_CAPACITY_TAG,
    }
    if value is not None:
        tag.update(Value=value, PropagateAtLaunch=False)
    return tag


def scale_down_group(autoscaling: Any, group: dict[str, Any], *, outcome: Outcome) -> None:
    """Saves the capacity in a tag (first: never zero a group without a way back), then sets
    min, max and desired to 0: with max left as it was, a scaling policy, a scheduled action
    or an ECS capacity provider could launch instances again overnight. A group whose
    capacity is already saved keeps that saved value."""
    name = group["AutoScalingGroupName"]
    tags = as_dict(group.get("Tags"))
    if tags.get(AUTOSCALE_TAG) == AUTOSCALE_OFF:
        outcome.skip(name, f"opted out ({AUTOSCALE_TAG}={AUTOSCALE_OFF})")
        return
    current = Capacity.of(group)
    saved_tag = tags.get(SAVED_CAPACITY_TAG)
    if saved_tag is None:
        if current.is_zero:
            outcome.skip(name, "already at zero capacity; nothing to save")
            return
        saved = current
        if not outcome.dry_run:
            autoscaling.create_or_update_tags(Tags=[_group_tag(name, saved.tag_value())])
    else:
        saved = Capacity.parse(saved_tag)
        if current.is_zero:
            outcome.skip(name, f"already scaled down ({saved.tag_value()} saved)")
            return
        outcome.warn(
            name,
            f"scaled up by hand since it was scaled down; keeping the saved {saved.tag_value()}",
        )
    if not outcome.dry_run:
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=0, DesiredCapacity=0
        )
    outcome.groups.append({"name": name, **saved.as_dict()})
    protected = sum(1 for i in group.get("Instances", []) if i.get("ProtectedFromScaleIn"))
    if protected:
        outcome.warn(name, f"{protected} instance(s) protected from scale-in keep running")


def scale_up_group(autoscaling: Any, group: dict[str, Any], *, outcome: Outcome) -> None:
    """Restores the saved capacity, then removes the tag (a retry re-applies the same values)."""
    name = group["AutoScalingGroupName"]
    saved_tag = as_dict(group.get("Tags")).get(SAVED_CAPACITY_TAG)
    if saved_tag is None:
        outcome.skip(name, "no saved capacity: not scaled down by the scheduler")
        return
    saved = Capacity.parse(saved_tag)
    if not outcome.dry_run:
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=saved.minimum,
            MaxSize=saved.maximum,
            DesiredCapacity=saved.desired,
        )
        autoscaling.delete_tags(Tags=[_group_tag(name)])
    outcome.groups.append({"name": name, **saved.as_dict()})


def scale_groups(autoscaling: Any, *, environment: str, down: bool, outcome: Outcome) -> None:
    change = scale_down_group if down else scale_up_group
    for group in groups(autoscaling, environment=environment):
        try:
            change(autoscaling, group, outcome=outcome)
        except (ClientError, ValueError) as error:
            outcome.fail(group["AutoScalingGroupName"], error)


# --- actions ---------------------------------------------------------------------------


def scale_down(ec2: Any, autoscaling: Any, *, environment: str, dry_run: bool) -> Outcome:
    """Groups first, then standalone instances (the reverse of scale_up: apps before the
    databases and services they depend on)."""
    outcome = Outcome(SCALE_DOWN, environment, dry_run)
    scale_groups(autoscaling, environment=environment, down=True, outcome=outcome)
    scale_instances(ec2, environment=environment, stop=True, outcome=outcome)
    return outcome


def scale_up(
    ec2: Any,
    autoscaling: Any,
    *,
    environment: str,
    dry_run: bool,
    waiting: Waiting | None = None,
) -> Outcome:
    """Instances first, then groups; then it watches the started instances (the groups do
    not wait for that)."""
    outcome = Outcome(SCALE_UP, environment, dry_run)
    scale_instances(ec2, environment=environment, stop=False, outcome=outcome)
    started = list(outcome.instances)
    scale_groups(autoscaling, environment=environment, down=False, outcome=outcome)
    if started and not dry_run:
        confirm_started(ec2, started, outcome=outcome, waiting=waiting or Waiting())
    return outcome


@dataclass(frozen=True)
class Usage:
    """One running instance and its average CPU over the window (None: no data)."""

    instance_id: str
    name: str
    instance_type: str
    average_cpu: float | None

    @property
    def idle(self) -> bool:
        return self.average_cpu is not None and self.average_cpu < IDLE_CPU_PERCENT

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "instance_type": self.instance_type,
            "average_cpu_percent": (
                None if self.average_cpu is None else round(self.average_cpu, 2)
            ),
            "idle": self.idle,
        }


def average_cpu(
    cloudwatch: Any, instance_ids: Sequence[str], *, start: datetime, end: datetime
) -> dict[str, float | None]:
    """Average CPUUtilization of each instance over [start, end), up to 500 per request.

    One period spans the whole window, so each answer is the true average of every sample
    (not an average of hourly averages); the window starts on a whole minute, as
    CloudWatch rounds it anyway.
    """
    period = int((end - start).total_seconds())
    averages: dict[str, float | None] = {}
    paginator = cloudwatch.get_paginator("get_metric_data")
    for batch in chunks(instance_ids, METRIC_QUERIES_PER_CALL):
        ids = {f"cpu{n}": instance_id for n, instance_id in enumerate(batch)}
        values: dict[str, list[float]] = {query_id: [] for query_id in ids}
        for page in paginator.paginate(
            StartTime=start,
            EndTime=end,
            MetricDataQueries=[
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/EC2",
                            "MetricName": "CPUUtilization",
                            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                        },
                        "Period": period,
                        "Stat": "Average",
                    },
                    "ReturnData": True,
                }
                for query_id, instance_id in ids.items()
            ],
        ):
            for result in page.get("MetricDataResults", []):
                values.setdefault(result["Id"], []).extend(result.get("Values", []))
        for query_id, instance_id in ids.items():
            found = values[query_id]
            averages[instance_id] = sum(found) / len(found) if found else None
    return averages


@dataclass(frozen=True)
class Report:
    environment: str
    start: datetime
    end: datetime
    usage: list[Usage]

    @property
    def idle(self) -> list[Usage]:
        return [u for u in self.usage if u.idle]

    def subject(self) -> str:
        return (
            f"opskit {self.environment}: {len(self.usage)} running instances, "
            f"{len(self.idle)} idle (CPU < {IDLE_CPU_PERCENT:g}% over 24 h)"
        )

    def body(self) -> str:
        lines = [
            f"{'IDLE' if u.idle else '    '}  {u.instance_id:<20}  {u.instance_type:<12}  "
            + ("no CPU data" if u.average_cpu is None else f"{u.average_cpu:6.2f} %")
            + (f"  {u.name}" if u.name else "")
            for u in self.usage
        ]
        return "\n".join(
            [
                f"Running instances tagged {ENVIRONMENT_TAG}={self.environment}, with their "
                f"average CPU from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC.",
                f"{len(self.idle)} of {len(self.usage)} are idle (average CPU below "
                f"{IDLE_CPU_PERCENT:g} %): stop, resize, or tag them {AUTOSCALE_TAG}="
                f"{AUTOSCALE_ON} to have them stopped out of hours.",
                "",
                *bounded(lines, limit=REPORT_LINES),
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": REPORT,
            "environment": self.environment,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "instances": [u.as_dict() for u in self.usage],
            "idle": [u.instance_id for u in self.idle],
        }


def build_report(ec2: Any, cloudwatch: Any, *, environment: str, now: datetime) -> Report:
    """The environment's running instances, idlest first."""
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    start = end - CPU_WINDOW
    running = list(
        instances(ec2, environment=environment, states=["running"], autoscale_only=False)
    )
    cpu = average_cpu(cloudwatch, [i["InstanceId"] for i in running], start=start, end=end)
    usage = [
        Usage(
            instance_id=i["InstanceId"],
            name=as_dict(i.get("Tags")).get("Name", ""),
            instance_type=i.get("InstanceType", ""),
            average_cpu=cpu.get(i["InstanceId"]),
        )
        for i in running
    ]
    usage.sort(key=lambda u: (u.average_cpu is None, u.average_cpu or 0.0, u.instance_id))
    return Report(environment, start, end, usage)


def failure_message(outcome: Outcome) -> tuple[str, str]:
    failures = [f"{f['resource']}: {f['error']}" for f in outcome.failed]
    return (
        f"opskit {outcome.environment} {outcome.action}: {len(outcome.failed)} resources failed",
        "\n".join(
            [
                f"{outcome.action} of environment {outcome.environment} changed "
                f"{len(outcome.instances)} instances and {len(outcome.groups)} Auto Scaling "
                f"groups; these failed and are as they were:",
                "",
                *bounded(failures, limit=REPORT_LINES),
            ]
        ),
    )


def _waiting(context: Any) -> Waiting:
    """At most START_WAIT_SECONDS, and never into the margin kept before the timeout."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    remaining = 900.0 if remaining_ms is None else float(remaining_ms()) / 1000
    seconds = max(0.0, min(START_WAIT_SECONDS, remaining - START_WAIT_MARGIN_SECONDS))
    return Waiting(seconds=seconds, sleep=sleep, clock=monotonic)


def _scale(request: Request, context: Any) -> Outcome:
    ec2, autoscaling = client("ec2"), client("autoscaling")
    if request.action == SCALE_DOWN:
        return scale_down(
            ec2, autoscaling, environment=request.environment, dry_run=request.dry_run
        )
    return scale_up(
        ec2,
        autoscaling,
        environment=request.environment,
        dry_run=request.dry_run,
        waiting=_waiting(context),
    )


def _count_failures(environment: str, failures: int) -> None:
    """FailedResources, per environment: two environments never share one alarm's metric."""
    metrics.add_dimension(name="environment", value=environment)
    metrics.add_metric(name="FailedResources", unit=MetricUnit.Count, value=failures)
    metrics.flush_metrics()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    request = parse_event(event)
    logger.append_keys(
        action=request.action, environment=request.environment, dry_run=request.dry_run
    )
    if request.action != REPORT:
        check_allowed(request, allowed_environments())
    topic_arn = None if request.dry_run else require_env("SNS_TOPIC_ARN")

    if request.action == REPORT:
        report = build_report(
            client("ec2"), client("cloudwatch"), environment=request.environment, now=clock()
        )
        if topic_arn is not None:
            publish(topic_arn, subject_line=report.subject(), message=report.body())
        logger.info("Report built", extra={"running": len(report.usage), "idle": len(report.idle)})
        return {**report.as_dict(), "dry_run": request.dry_run, "published": bool(topic_arn)}

    outcome = _scale(request, context)
    if not request.dry_run:
        _count_failures(request.environment, len(outcome.failed))
    if outcome.failed and topic_arn is not None:
        subject_line, message = failure_message(outcome)
        publish(topic_arn, subject_line=subject_line, message=message)
    logger.info(
        "Scaled" if not request.dry_run else "Dry run",
        extra={
            "instances": len(outcome.instances),
            "groups": len(outcome.groups),
            "skipped": len(outcome.skipped),
            "failed": outcome.failed,
        },
    )
    return outcome.as_dict()


imports_done()
