"""Backup automation: EBS snapshots of tagged EC2 instances, manual snapshots of tagged RDS
databases, and retention of the snapshots it made.

Invoked asynchronously by EventBridge Scheduler. A failure on one resource is collected,
reported and counted, never raised: an async retry would snapshot everything again. The
handler raises only when it could do no work at all (nothing could be listed), which a
retry can fix without duplicating anything, or when asked for another environment than
its own. It also stops creating and deleting shortly before its timeout, so a slow run
ends with a report instead of a timeout and a retry.

RDS retention runs before the RDS snapshots are made: manual DB snapshots have a small
quota (100 per Region by default), and tonight's snapshots must find room.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError
from opskit_common.clients import client, longest_call_seconds
from opskit_common.config import env_int, require_env
from opskit_common.deadline import Deadline
from opskit_common.events import MalformedEventError, optional, optional_bool, optional_choice
from opskit_common.reports import as_json, bounded, publish
from opskit_common.snapshots import ami_snapshot_ids, locked_snapshot_ids
from opskit_common.startup import imports_done
from opskit_common.tags import BACKUP_OWNERSHIP_TAGS, as_dict, as_list, carries, is_permanent

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "backup")
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "opskit",
    service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "backup",
)

BACKUP_TYPES = ("all", "ec2", "rds")
EVENT_KEYS = ("backup_type", "environment", "dry_run")
SMOKE_TEST_KEY = "opskit"
DEFAULT_RETENTION_DAYS = 7
METRIC_DIMENSION = "environment"
"""FailedResources (and the other counts) carry the deployment's environment, so two
environments in one account never share an alarm's metric (lower case, like `service`)."""

BACKUP_TAG_VALUES = ["true", "True", "TRUE"]
"""Backup=true as people type it; EC2 tag filters compare exactly."""
RUNNING_OR_STOPPED = ["running", "stopped"]
DB_INSTANCE_SNAPSHOT_STATES = frozenset({"available", "storage-optimization"})
"""CreateDBSnapshot needs the DB instance in one of these states."""
DB_CLUSTER_SNAPSHOT_STATES = frozenset({"available"})
"""CreateDBClusterSnapshot needs the DB cluster available."""
QUOTA_ERROR_CODES = frozenset({"SnapshotQuotaExceeded", "SnapshotLimitExceeded"})
"""RDS and EC2 snapshot quotas: a create refused for these never keeps old snapshots, which
would only keep the quota full."""

RDS_SNAPSHOT_MAX_LENGTH = 255
"""CreateDBSnapshot: DBSnapshotIdentifier has 1 to 255 letters, digits or hyphens."""
RDS_CLUSTER_SNAPSHOT_MAX_LENGTH = 63
"""CreateDBClusterSnapshot: DBClusterSnapshotIdentifier has at most 63."""
IDENTIFIER_MARKER = "-opskit-"
"""Every RDS snapshot this function makes has it; its IAM is limited to such names."""

RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 2
"""Retries of an EC2 or RDS call (3 attempts in all); adaptive mode also slows the client
down once throttled. Few, so that one call's worst case fits the deadline margin."""
DEADLINE_MARGIN_SECONDS = (
    longest_call_seconds(retry_mode=RETRY_MODE, max_attempts=MAX_ATTEMPTS) + longest_call_seconds()
)
"""Room left at the end for the worst case of the last EC2/RDS call started and of the SNS
report (every attempt timing out, the longest backoffs): 121 s..."""
DEADLINE_MARGIN_FRACTION = 0.5
"""...or this share of the time left, when less than twice that is left (the construct's
minimum timeout leaves more)."""
REPORT_LIST_LIMIT = 100
ERROR_TEXT_LIMIT = 300

EBS_DELETABLE_STATES = frozenset({"completed", "error"})
RDS_DELETABLE_STATES = frozenset({"available", "failed"})


class NothingDoneError(RuntimeError):
    """No resource could even be listed: the run did nothing, so a retry is safe."""


class RefusedEnvironmentError(RuntimeError):
    """The event names another environment than the function's own; nothing was touched."""


@dataclass(frozen=True)
class Request:
    """What one invocation is asked to do."""

    backup_type: str
    environment: str
    dry_run: bool

    @property
    def ec2(self) -> bool:
        return self.backup_type in ("all", "ec2")

    @property
    def rds(self) -> bool:
        return self.backup_type in ("all", "rds")


@dataclass
class Run:
    """What a run did, would do (dry run), skipped and failed on, in order."""

    request: Request
    now: datetime
    retention_days: int
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    listings_done: int = 0
    listings_failed: int = 0
    failed_sources: set[str] = field(default_factory=set)

    @property
    def cutoff(self) -> datetime:
        """The run's start less the retention: a snapshot that started before it is past
        retention; one that started at or after it is kept."""
        return self.now - timedelta(days=self.retention_days)

    def past_retention(self, started: datetime | None) -> bool:
        return started is not None and as_utc(started) < self.cutoff

    def fail(self, resource: str, error: BaseException | str, *, source: str | None = None) -> None:
        """Records a failure; one of `source` (a volume whose snapshot failed) keeps that
        source's older snapshots, unless the failure is a snapshot quota."""
        text = describe_error(error) if isinstance(error, BaseException) else error
        self.failed.append({"resource": resource, "error": text})
        if source is not None and error_code(error) not in QUOTA_ERROR_CODES:
            self.failed_sources.add(source)
        unexpected: BaseException | None = None
        if isinstance(error, Exception) and not isinstance(error, ClientError | BotoCoreError):
            unexpected = error  # a bug, not AWS: keep the traceback
        logger.warning(
            "Backup step failed", extra={"resource": resource, "error": text}, exc_info=unexpected
        )

    def skip(self, note: str) -> None:
        self.skipped.append(note)
        logger.info("Skipped", extra={"note": note})

    def result(self) -> dict[str, Any]:
        """The handler's return value: exactly the documented contract."""
        return {
            "environment": self.request.environment,
            "backup_type": self.request.backup_type,
            "dry_run": self.request.dry_run,
            "created": list(self.created),
            "deleted": list(self.deleted),
            "failed": [dict(f) for f in self.failed],
        }


def error_code(error: BaseException | str) -> str:
    """The AWS error code of a ClientError; empty for anything else."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def describe_error(error: BaseException) -> str:
    """One short line: the AWS error code and message, or the exception's type and text."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        text = f"{details.get('Code', 'ClientError')}: {details.get('Message', '')}".strip()
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def parse_request(event: Any, *, environment: str) -> Request:
    """The request an event makes for the function's own `environment`.

    Unknown keys are refused (a mistyped `dry_run` would otherwise run for real), and so is
    another environment: the function's permissions and retention are its environment's,
    and another's snapshots are not its to make or expire.
    """
    if event is None:
        event = {}
    if not isinstance(event, Mapping):
        raise MalformedEventError(f"event must be a JSON object, got {type(event).__name__}")
    unknown = sorted(str(key) for key in event if key not in EVENT_KEYS)
    if unknown:
        raise MalformedEventError(
            f"event has unknown field {unknown[0]!r:.60}; valid fields: {', '.join(EVENT_KEYS)}"
        )
    requested = optional(event, "environment", environment)
    if not isinstance(requested, str) or not requested.strip():
        raise MalformedEventError("event field 'environment' must be a non-empty string")
    if requested.strip() != environment:
        raise RefusedEnvironmentError(
            f"refusing a backup of environment {requested.strip()!r:.80}: this function backs "
            f"up {environment!r} only (its ENVIRONMENT); nothing was touched"
        )
    return Request(
        backup_type=optional_choice(event, "backup_type", BACKUP_TYPES, default="all"),
        environment=environment,
        dry_run=optional_bool(event, "dry_run", default=False),
    )


def as_utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive values from the SDK are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def owned_by(environment: str) -> dict[str, str]:
    """The tags every snapshot of this function carries, and retention requires."""
    return {"Environment": environment, **BACKUP_OWNERSHIP_TAGS}


def rds_snapshot_identifier(source: str, when: datetime, *, max_length: int) -> str:
    """`<db>-opskit-<YYYYMMDD-HHMMSS>` within RDS naming rules.

    Letters, digits and single hyphens, starting with a letter, not ending with a hyphen,
    at most `max_length` long (255 for instance snapshots, 63 for cluster snapshots). A
    name that must be cut keeps a short hash of the whole, so two long names that share
    a prefix still get different identifiers.
    """
    suffix = f"{IDENTIFIER_MARKER}{as_utc(when):%Y%m%d-%H%M%S}"
    name = re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"db-{name}".rstrip("-")
    room = max_length - len(suffix)
    if len(name) > room:
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:6]
        name = f"{name[: room - len(digest) - 1].rstrip('-')}-{digest}"
    return f"{name}{suffix}"


def _pages(paginator: Any, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in paginator.paginate(**kwargs):
        yield from page.get(key) or ()


def _listing(run: Run, operation: str, list_all: Callable[[], list[Any]]) -> list[Any] | None:
    """Everything `list_all` returns, or None (recorded as a failure) if it cannot list."""
    try:
        items = list_all()
    except (ClientError, BotoCoreError) as error:
        run.listings_failed += 1
        run.fail(operation, error)
        return None
    run.listings_done += 1
    return items


def _out_of_time(run: Run, deadline: Deadline, resource: str) -> bool:
    if not deadline.expired():
        return False
    run.fail(resource, "not attempted: the run's time budget was used up (next run continues)")
    return True


# -- EC2 ----------------------------------------------------------------------------------


def backup_instances(ec2: Any, run: Run, deadline: Deadline) -> None:
    """One snapshot per attached EBS volume of each tagged running or stopped instance."""
    environment = run.request.environment
    instances = _listing(
        run,
        "ec2:DescribeInstances",
        lambda: [
            instance
            for reservation in _pages(
                ec2.get_paginator("describe_instances"),
                "Reservations",
                Filters=[
                    {"Name": "tag:Environment", "Values": [environment]},
                    {"Name": "tag:Backup", "Values": BACKUP_TAG_VALUES},
                    {"Name": "instance-state-name", "Values": RUNNING_OR_STOPPED},
                ],
            )
            for instance in reservation.get("Instances") or ()
        ],
    )
    snapshotted: dict[str, str] = {}
    for instance in instances or ():
        instance_id = str(instance.get("InstanceId", "?"))
        label = as_dict(instance.get("Tags")).get("Name") or instance_id
        for mapping in instance.get("BlockDeviceMappings") or ():
            device = str(mapping.get("DeviceName", "?"))
            volume_id = (mapping.get("Ebs") or {}).get("VolumeId")
            if not volume_id:
                run.skip(f"{instance_id} {device}: not an EBS volume (instance store)")
                continue
            if volume_id in snapshotted:
                # Multi-Attach: EC2 refuses a second snapshot of a volume within 15 s.
                first = snapshotted[volume_id]
                run.skip(f"{instance_id} {device}: {volume_id} already snapshotted with {first}")
                continue
            snapshotted[volume_id] = instance_id
            if _out_of_time(run, deadline, volume_id):
                continue
            _snapshot_volume(
                ec2, run, instance_id=instance_id, label=label, device=device, volume_id=volume_id
            )


def _snapshot_volume(
    ec2: Any, run: Run, *, instance_id: str, label: str, device: str, volume_id: str
) -> None:
    environment = run.request.environment
    if run.request.dry_run:
        run.created.append(volume_id)
        return
    tags = {
        "Name": f"{label} {device} {run.now:%Y-%m-%d %H:%M} UTC"[:256],
        "Environment": environment,
        "InstanceId": instance_id,
        "VolumeId": volume_id,
        "DeviceName": device,
        **BACKUP_OWNERSHIP_TAGS,
    }
    try:
        response = ec2.create_snapshot(
            VolumeId=volume_id,
            Description=(
                f"opskit backup of {volume_id} ({device}) on {instance_id}, "
                f"environment {environment}"
            )[:255],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": as_list(tags)}],
        )
    except Exception as error:  # one volume's failure never stops the others
        run.fail(volume_id, error, source=volume_id)
        return
    run.created.append(str(response["SnapshotId"]))


def expire_ebs_snapshots(ec2: Any, run: Run, deadline: Deadline) -> None:
    """Deletes this environment's owned EBS snapshots that are past retention."""
    owned = owned_by(run.request.environment)
    snapshots = _listing(
        run,
        "ec2:DescribeSnapshots",
        lambda: list(
            _pages(
                ec2.get_paginator("describe_snapshots"),
                "Snapshots",
                OwnerIds=["self"],
                Filters=[{"Name": f"tag:{key}", "Values": [value]} for key, value in owned.items()],
            )
        ),
    )
    due: list[str] = []
    for snapshot in snapshots or ():
        snapshot_id = str(snapshot.get("SnapshotId", "?"))
        tags = as_dict(snapshot.get("Tags"))
        if not carries(tags, owned) or not run.past_retention(snapshot.get("StartTime")):
            continue
        if is_permanent(tags):
            run.skip(f"{snapshot_id}: tagged Retention=permanent")
            continue
        if snapshot.get("State") not in EBS_DELETABLE_STATES:
            continue
        volume_id = tags.get("VolumeId") or str(snapshot.get("VolumeId", ""))
        if volume_id in run.failed_sources:
            run.skip(f"{snapshot_id}: kept, today's backup of {volume_id} failed")
            continue
        due.append(snapshot_id)
    if not due:
        return
    protected = _undeletable(ec2, run)
    for snapshot_id in due:
        if snapshot_id in protected:
            run.skip(f"{snapshot_id}: kept, {protected[snapshot_id]}")
            continue
        if _out_of_time(run, deadline, snapshot_id):
            continue
        if not run.request.dry_run:
            try:
                ec2.delete_snapshot(SnapshotId=snapshot_id)
            except Exception as error:
                if error_code(error) == "InvalidSnapshot.InUse":
                    run.skip(f"{snapshot_id}: kept, {describe_error(error)}")
                else:
                    run.fail(snapshot_id, error)
                continue
        run.deleted.append(snapshot_id)


def _undeletable(ec2: Any, run: Run) -> dict[str, str]:
    """Snapshot id -> why EC2 would refuse to delete it: an AMI of the account uses it, or
    an EBS snapshot lock holds it. A listing that fails is recorded; EC2 still refuses."""
    used = _listing(run, "ec2:DescribeImages", lambda: sorted(ami_snapshot_ids(ec2)))
    locked = _listing(run, "ec2:DescribeLockedSnapshots", lambda: sorted(locked_snapshot_ids(ec2)))
    return {
        **dict.fromkeys(used or (), "used by an AMI of the account"),
        **dict.fromkeys(locked or (), "under an EBS snapshot lock"),
    }


# -- RDS ----------------------------------------------------------------------------------


def _selected(tags: Mapping[str, str], environment: str) -> bool:
    return tags.get("Environment") == environment and tags.get("Backup", "") in BACKUP_TAG_VALUES


def list_db_instances(rds: Any, run: Run) -> list[dict[str, Any]] | None:
    """The DB instances tagged for backup that are not part of a cluster (None: the
    listing failed, recorded)."""
    databases = _listing(
        run,
        "rds:DescribeDBInstances",
        lambda: list(_pages(rds.get_paginator("describe_db_instances"), "DBInstances")),
    )
    if databases is None:
        return None
    selected = []
    for database in databases:
        identifier = str(database.get("DBInstanceIdentifier", "?"))
        if not _selected(as_dict(database.get("TagList")), run.request.environment):
            continue
        cluster = database.get("DBClusterIdentifier")
        if cluster:
            run.skip(f"{identifier}: member of DB cluster {cluster}; tag the cluster instead")
            continue
        selected.append(database)
    return selected


def list_db_clusters(rds: Any, run: Run) -> list[dict[str, Any]] | None:
    """The DB clusters (Aurora, Multi-AZ DB clusters) tagged for backup (None: the listing
    failed, recorded)."""
    clusters = _listing(
        run,
        "rds:DescribeDBClusters",
        lambda: list(_pages(rds.get_paginator("describe_db_clusters"), "DBClusters")),
    )
    if clusters is None:
        return None
    return [
        cluster
        for cluster in clusters
        if _selected(as_dict(cluster.get("TagList")), run.request.environment)
    ]


def _not_ready(identifier: str, status: str, needed: str, source: Mapping[str, Any]) -> str:
    """Why a database gets no snapshot tonight: RDS refuses one in any other state."""
    note = f"{identifier}: status {status!r}, not snapshotted (a manual snapshot needs {needed})"
    window = source.get("PreferredBackupWindow")
    if status == "backing-up" and window:
        note += f"; its automated backup window is {window} UTC: schedule the backup outside it"
    return note


def backup_db_instances(
    rds: Any, run: Run, deadline: Deadline, databases: list[dict[str, Any]]
) -> None:
    """A manual snapshot of each listed DB instance that is in a state to take one."""
    for database in databases:
        identifier = str(database.get("DBInstanceIdentifier", "?"))
        status = str(database.get("DBInstanceStatus", "unknown"))
        if status not in DB_INSTANCE_SNAPSHOT_STATES:
            run.skip(_not_ready(identifier, status, "available or storage-optimization", database))
            continue
        if _out_of_time(run, deadline, identifier):
            continue
        snapshot = rds_snapshot_identifier(identifier, run.now, max_length=RDS_SNAPSHOT_MAX_LENGTH)
        _snapshot_rds(
            run,
            source=identifier,
            snapshot=snapshot,
            create=partial(
                rds.create_db_snapshot,
                DBInstanceIdentifier=identifier,
                DBSnapshotIdentifier=snapshot,
            ),
            source_tag="DBInstanceIdentifier",
        )


def backup_db_clusters(
    rds: Any, run: Run, deadline: Deadline, clusters: list[dict[str, Any]]
) -> None:
    """A manual snapshot of each listed DB cluster that is available."""
    for cluster in clusters:
        identifier = str(cluster.get("DBClusterIdentifier", "?"))
        status = str(cluster.get("Status", "unknown"))
        if status not in DB_CLUSTER_SNAPSHOT_STATES:
            run.skip(_not_ready(identifier, status, "available", cluster))
            continue
        if _out_of_time(run, deadline, identifier):
            continue
        snapshot = rds_snapshot_identifier(
            identifier, run.now, max_length=RDS_CLUSTER_SNAPSHOT_MAX_LENGTH
        )
        _snapshot_rds(
            run,
            source=identifier,
            snapshot=snapshot,
            create=partial(
                rds.create_db_cluster_snapshot,
                DBClusterIdentifier=identifier,
                DBClusterSnapshotIdentifier=snapshot,
            ),
            source_tag="DBClusterIdentifier",
        )


def _snapshot_rds(
    run: Run,
    *,
    source: str,
    snapshot: str,
    create: Callable[..., Any],
    source_tag: str,
) -> None:
    if not run.request.dry_run:
        tags = {
            "Name": snapshot,
            "Environment": run.request.environment,
            source_tag: source,
            **BACKUP_OWNERSHIP_TAGS,
        }
        try:
            create(Tags=as_list(tags))
        except Exception as error:  # one database's failure never stops the others
            run.fail(source, error)
            return
    run.created.append(snapshot)


def expire_db_snapshots(
    rds: Any, run: Run, deadline: Deadline, databases: list[dict[str, Any]] | None
) -> None:
    """Deletes this environment's owned manual DB instance snapshots past retention."""
    if databases is None:
        run.skip("DB snapshots: retention not applied, the DB instances could not be listed")
        return
    _expire_rds(
        run,
        deadline,
        operation="rds:DescribeDBSnapshots",
        list_all=lambda: list(
            _pages(rds.get_paginator("describe_db_snapshots"), "DBSnapshots", SnapshotType="manual")
        ),
        id_key="DBSnapshotIdentifier",
        source_key="DBInstanceIdentifier",
        backed_up={str(d.get("DBInstanceIdentifier")) for d in databases},
        delete=lambda name: rds.delete_db_snapshot(DBSnapshotIdentifier=name),
    )


def expire_cluster_snapshots(
    rds: Any, run: Run, deadline: Deadline, clusters: list[dict[str, Any]] | None
) -> None:
    """Deletes this environment's owned manual DB cluster snapshots past retention."""
    if clusters is None:
        run.skip("DB cluster snapshots: retention not applied, the DB clusters could not be listed")
        return
    _expire_rds(
        run,
        deadline,
        operation="rds:DescribeDBClusterSnapshots",
        list_all=lambda: list(
            _pages(
                rds.get_paginator("describe_db_cluster_snapshots"),
                "DBClusterSnapshots",
                SnapshotType="manual",
            )
        ),
        id_key="DBClusterSnapshotIdentifier",
        source_key="DBClusterIdentifier",
        backed_up={str(c.get("DBClusterIdentifier")) for c in clusters},
        delete=lambda name: rds.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=name),
    )


def _newest_available(
    snapshots: list[dict[str, Any]], *, owned: Mapping[str, str], id_key: str, source_key: str
) -> set[str]:
    """The newest available snapshot of each source among the function's own."""
    newest: dict[str, tuple[datetime, str]] = {}
    for snapshot in snapshots:
        name = str(snapshot.get(id_key, ""))
        created_at = snapshot.get("SnapshotCreateTime")
        if (
            created_at is None
            or snapshot.get("Status") != "available"
            or IDENTIFIER_MARKER not in name
            or not carries(as_dict(snapshot.get("TagList")), owned)
        ):
            continue
        source = str(snapshot.get(source_key, ""))
        candidate = (as_utc(created_at), name)
        if source not in newest or candidate > newest[source]:
            newest[source] = candidate
    return {name for _, name in newest.values()}


def _expire_rds(
    run: Run,
    deadline: Deadline,
    *,
    operation: str,
    list_all: Callable[[], list[Any]],
    id_key: str,
    source_key: str,
    backed_up: set[str],
    delete: Callable[[str], Any],
) -> None:
    """Runs before tonight's RDS snapshots are made, so no failure of theirs is known yet:
    instead, a database still backed up always keeps its newest snapshot, even past
    retention (a database whose backups keep failing keeps its last good one)."""
    owned = owned_by(run.request.environment)
    snapshots = _listing(run, operation, list_all)
    if snapshots is None:
        return
    newest = _newest_available(snapshots, owned=owned, id_key=id_key, source_key=source_key)
    for snapshot in snapshots:
        name = str(snapshot.get(id_key, "?"))
        tags = as_dict(snapshot.get("TagList"))
        if not carries(tags, owned) or not run.past_retention(snapshot.get("SnapshotCreateTime")):
            continue
        if is_permanent(tags):
            run.skip(f"{name}: tagged Retention=permanent")
            continue
        if snapshot.get("Status") not in RDS_DELETABLE_STATES:
            continue
        if IDENTIFIER_MARKER not in name:
            run.skip(f"{name}: not named like this function's snapshots (<db>-opskit-...)")
            continue
        source = str(snapshot.get(source_key, ""))
        if name in newest and source in backed_up:
            run.skip(f"{name}: kept, the newest snapshot of {source}, which has none younger")
            continue
        if _out_of_time(run, deadline, name):
            continue
        if not run.request.dry_run:
            try:
                delete(name)
            except Exception as error:
                run.fail(name, error)
                continue
        run.deleted.append(name)


# -- the run ------------------------------------------------------------------------------


def run_backup(
    request: Request,
    *,
    ec2: Any,
    rds: Any,
    now: datetime,
    retention_days: int,
    deadline: Deadline,
) -> Run:
    """Tonight's snapshots and retention. Raises NothingDoneError only when not one listing
    succeeded.

    EBS: snapshots first, retention last (a failed volume keeps its older snapshots, and a
    long backlog of deletions never delays a backup). RDS: retention first, so the manual
    snapshot quota has room for tonight's (it holds at most a few hundred deletions).
    """
    run = Run(request=request, now=as_utc(now), retention_days=retention_days)
    if request.ec2:
        backup_instances(ec2, run, deadline)
    if request.rds:
        databases = list_db_instances(rds, run)
        clusters = list_db_clusters(rds, run)
        expire_db_snapshots(rds, run, deadline, databases)
        expire_cluster_snapshots(rds, run, deadline, clusters)
        backup_db_instances(rds, run, deadline, databases or [])
        backup_db_clusters(rds, run, deadline, clusters or [])
    if request.ec2:
        expire_ebs_snapshots(ec2, run, deadline)
    if run.listings_done == 0:
        reasons = "; ".join(f"{f['resource']}: {f['error']}" for f in run.failed)
        raise NothingDoneError(f"backup of {request.environment} did nothing: {reasons}")
    return run


def report(run: Run) -> tuple[str, str]:
    """The SNS subject and body of a run; lists are bounded, SNS limits applied on publish."""
    request = run.request
    verb = ("would create", "would delete") if request.dry_run else ("created", "deleted")
    outcome = "FAILED " if run.failed else ""
    subject = (
        f"{'[dry run] ' if request.dry_run else ''}{outcome}opskit backup {request.environment}: "
        f"{len(run.created)} {verb[0]}, {len(run.deleted)} {verb[1]}, {len(run.failed)} failed"
    )
    lines = [
        f"opskit backup of environment {request.environment!r} ({request.backup_type})"
        f"{', DRY RUN: nothing was changed' if request.dry_run else ''}",
        f"Run at {run.now:%Y-%m-%d %H:%M:%S} UTC; retention {run.retention_days} days "
        f"(owned snapshots older than {run.cutoff:%Y-%m-%d %H:%M} UTC are deleted).",
    ]
    sections: list[tuple[str, list[str]]] = [
        (f"Failed ({len(run.failed)})", [f"{f['resource']}: {f['error']}" for f in run.failed]),
        (f"{verb[0].capitalize()} ({len(run.created)})", run.created),
        (f"{verb[1].capitalize()} ({len(run.deleted)})", run.deleted),
        (f"Skipped ({len(run.skipped)})", run.skipped),
    ]
    for title, items in sections:
        if items:
            lines += [
                "",
                f"{title}:",
                *(f"  {item}" for item in bounded(items, limit=REPORT_LIST_LIMIT)),
            ]
    lines += ["", "Result:", as_json(run.result())]
    return subject, "\n".join(lines)


def _record_metrics(run: Run, deployment_environment: str) -> None:
    """FailedResources (alarmed) and, for real runs, what was created and deleted, as EMF."""
    metrics.add_dimension(name=METRIC_DIMENSION, value=deployment_environment)
    metrics.add_metric(name="FailedResources", unit=MetricUnit.Count, value=len(run.failed))
    if not run.request.dry_run:
        metrics.add_metric(name="SnapshotsCreated", unit=MetricUnit.Count, value=len(run.created))
        metrics.add_metric(name="SnapshotsDeleted", unit=MetricUnit.Count, value=len(run.deleted))
    metrics.flush_metrics()


def _publish_report(run: Run, topic_arn: str) -> None:
    """Publishes the report; a failure to publish is itself reported, never raised (the
    snapshots exist, and a retry would make them again)."""
    subject, body = report(run)
    try:
        publish(
            topic_arn,
            subject_line=subject,
            message=body,
            attributes={
                "function": "backup",
                "environment": run.request.environment,
                "outcome": "failed" if run.failed else "succeeded",
            },
        )
    except (ClientError, BotoCoreError) as error:
        run.fail("sns:Publish", error)


def _deadline(context: Any) -> Deadline:
    """Checked before every create and delete; what is left at the margin is reported."""
    return Deadline.from_context(
        context, margin_seconds=DEADLINE_MARGIN_SECONDS, margin_fraction=DEADLINE_MARGIN_FRACTION
    )


def aws_client(service: str) -> Any:
    """EC2 or RDS, with adaptive retries: a run over many resources may be throttled."""
    return client(service, retry_mode=RETRY_MODE, max_attempts=MAX_ATTEMPTS)


def _is_smoke_test(event: Any) -> bool:
    marker = event.get(SMOKE_TEST_KEY) if isinstance(event, Mapping) else None
    return isinstance(marker, Mapping) and marker.get("smokeTest") is True


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    deployment_environment = require_env("ENVIRONMENT")
    topic_arn = require_env("SNS_TOPIC_ARN")
    retention_days = env_int("BACKUP_RETENTION_DAYS", default=DEFAULT_RETENTION_DAYS, minimum=1)
    smoke_test = _is_smoke_test(event)
    request = (
        Request(backup_type="all", environment=deployment_environment, dry_run=True)
        if smoke_test
        else parse_request(event, environment=deployment_environment)
    )
    logger.append_keys(
        environment=request.environment, backup_type=request.backup_type, dry_run=request.dry_run
    )
    run = run_backup(
        request,
        ec2=aws_client("ec2") if request.ec2 else None,
        rds=aws_client("rds") if request.rds else None,
        now=datetime.now(UTC),
        retention_days=retention_days,
        deadline=_deadline(context),
    )
    if smoke_test:
        return _smoke_test_result(run)
    _publish_report(run, topic_arn)
    _record_metrics(run, deployment_environment)
    logger.info(
        "Backup run finished",
        extra={
            "snapshots_created": len(run.created),
            "snapshots_deleted": len(run.deleted),
            "resources_failed": len(run.failed),
        },
    )
    return run.result()


def _smoke_test_result(run: Run) -> dict[str, Any]:
    """After a deployment: a dry run without report or metrics. Any listing that fails is
    most likely the new version's permissions, so the deployment rolls back."""
    if run.listings_failed:
        reasons = "; ".join(f"{f['resource']}: {f['error']}" for f in run.failed)
        raise NothingDoneError(f"smoke test: a listing failed: {reasons}")
    logger.info("Smoke test passed", extra={"would_create": len(run.created)})
    return {"smokeTest": "passed", **run.result()}


imports_done()
