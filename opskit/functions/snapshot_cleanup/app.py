"""EBS snapshot cleanup: deletes the account's own snapshots older than the retention, safely.

Never deletes a snapshot that is tagged ``Retention=permanent``, is referenced by an AMI
the account owns, is managed by AWS Backup, is locked (EBS snapshot lock), is among the
newest ``MIN_KEEP_PER_VOLUME`` usable snapshots of its volume, or, with ``SCOPE=owned``
(the default), was not made by the backup function of this ``ENVIRONMENT``. Lists
everything first (paginated), then deletes oldest first, checking before each delete that
the worst case of one more delete and the report still fits before the Lambda timeout;
what is left is reported as ``remaining`` and the next run continues. A snapshot that
cannot be deleted is counted and reported, never raised: re-running is harmless, and the
next run tries it again. Only systemic errors (denied, throttled after retries, service
errors) in a row stop the run early.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError
from opskit_common.clients import client, longest_call_seconds
from opskit_common.config import env_choice, env_int, require_env
from opskit_common.deadline import Deadline
from opskit_common.events import MalformedEventError, optional_bool, optional_int
from opskit_common.reports import as_json, bounded, publish
from opskit_common.snapshots import PAGE_SIZE, ami_snapshot_ids, locked_snapshot_ids
from opskit_common.startup import imports_done
from opskit_common.tags import BACKUP_OWNERSHIP_TAGS, as_dict, carries, is_permanent

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "snapshot-cleanup"
logger = Logger(service=SERVICE)
# Dimensions service and environment: the construct's alarm watches exactly this metric.
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "opskit", service=SERVICE
)

SCOPES = ("owned", "all")
EVENT_KEYS = frozenset({"retention_days", "dry_run", "opskit"})
MAX_RETENTION_DAYS = 36500

NOT_OWNED = "not_owned"
PERMANENT = "permanent"
AWS_BACKUP = "aws_backup"
AMI = "ami"
LOCKED = "locked"
NEWEST_OF_VOLUME = "newest_of_volume"
IN_USE = "in_use"
ALREADY_DELETED = "already_deleted"
FAILED = "failed"

NO_VOLUME = "vol-ffffffff"
"""What EC2 reports as the volume of a copied or imported snapshot: not a real volume."""
AWS_BACKUP_TAG_PREFIX = "aws:backup:"
AWS_BACKUP_DESCRIPTION = "created by the aws backup service"
MAX_CONSECUTIVE_FAILURES = 20
"""So many systemic failures in a row (see SYSTEMIC_ERROR_CODES): stop, report."""
SYSTEMIC_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "UnauthorizedOperation",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)
"""Errors of the account or of EC2, not of one snapshot: the next delete fails the same way.
Any other refusal (a lock, a state) costs only its snapshot and never stops the run."""
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 3
"""Retries of an EC2 call (4 attempts in all); adaptive mode also slows the client down once
EC2 throttles it. Few, so that one delete's worst case fits the deadline margin."""
DEADLINE_MARGIN_SECONDS = (
    longest_call_seconds(retry_mode=RETRY_MODE, max_attempts=MAX_ATTEMPTS) + longest_call_seconds()
)
"""Kept free before the timeout for the worst case of the last delete started and of the
report (every attempt timing out, the longest backoffs): 142 s..."""
DEADLINE_MARGIN_FRACTION = 0.5
"""...or this share of the time left, when less than twice that is left (the construct's
minimum timeout leaves more)."""
REPORT_LIST_LIMIT = 200

clock: Callable[[], float] = time.monotonic  # replaced in tests


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    """What one run does: from the environment, overridden by the event."""

    retention_days: int
    dry_run: bool
    scope: str
    min_keep_per_volume: int
    environment: str = ""
    """ENVIRONMENT: with SCOPE=owned, only snapshots tagged with it are candidates."""

    def owned_tags(self) -> Mapping[str, str] | None:
        """The tags a candidate must carry; None with SCOPE=all."""
        if self.scope != "owned":
            return None
        return {**BACKUP_OWNERSHIP_TAGS, "Environment": self.environment}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The part of a DescribeSnapshots item the decisions need."""

    id: str
    volume_id: str | None
    started: datetime
    usable: bool
    tags: Mapping[str, str]
    description: str


@dataclass
class Outcome:
    """What a run did (or, in a dry run, would do)."""

    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    remaining: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_result(self) -> dict[str, Any]:
        """The handler's return value."""
        return {
            "dry_run": self.dry_run,
            "deleted_count": len(self.deleted),
            "snapshot_ids": list(self.deleted),
            "skipped": dict(sorted(self.skipped.items())),
            "remaining": self.remaining,
        }


def read_settings(event: Any) -> Settings:
    """Settings from RETENTION_DAYS, SCOPE, MIN_KEEP_PER_VOLUME, ENVIRONMENT and the event.

    Unknown event keys are refused: a misspelt ``dry_run`` must not mean a real run.
    ENVIRONMENT is required with SCOPE=owned: a dev cleanup with a short retention must
    never delete prod's backups in a shared account.
    """
    if isinstance(event, Mapping):
        unknown = sorted(str(key) for key in event if key not in EVENT_KEYS)
        if unknown:
            raise MalformedEventError(
                f"event has unknown field '{unknown[0][:40]}'; "
                f"valid fields: {', '.join(sorted(EVENT_KEYS - {'opskit'}))}"
            )
    retention = env_int("RETENTION_DAYS", default=30, minimum=1)
    scope = env_choice("SCOPE", SCOPES, default="owned")
    return Settings(
        retention_days=optional_int(
            event, "retention_days", default=retention, minimum=1, maximum=MAX_RETENTION_DAYS
        ),
        dry_run=optional_bool(event, "dry_run", default=False),
        scope=scope,
        min_keep_per_volume=env_int("MIN_KEEP_PER_VOLUME", default=1, minimum=0),
        environment=(
            require_env("ENVIRONMENT")
            if scope == "owned"
            else os.environ.get("ENVIRONMENT", "").strip()
        ),
    )


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_snapshot(item: Mapping[str, Any]) -> Snapshot:
    volume_id = item.get("VolumeId")
    return Snapshot(
        id=str(item["SnapshotId"]),
        volume_id=None if not volume_id or volume_id == NO_VOLUME else str(volume_id),
        started=_as_utc(item["StartTime"]),
        usable=item.get("State") == "completed",
        tags=as_dict(item.get("Tags")),
        description=str(item.get("Description") or ""),
    )


def list_snapshots(ec2: Any) -> Iterator[Snapshot]:
    """Every snapshot the account owns, a page of 1,000 at a time."""
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], PaginationConfig={"PageSize": PAGE_SIZE}
    )
    for page in pages:
        for item in page.get("Snapshots") or ():
            yield parse_snapshot(item)


def newest_of_each_volume(snapshots: Iterable[Snapshot], keep: int) -> set[str]:
    """The ``keep`` newest usable snapshots of every volume, among all snapshots listed.

    Counted over every snapshot of the volume (owned or not, old or new), so a recent
    manual snapshot is what makes an old one deletable. Failed or unfinished snapshots
    never count: keeping one of those would leave the volume without a usable copy.
    """
    if keep <= 0:
        return set()
    by_volume: defaultdict[str, list[Snapshot]] = defaultdict(list)
    for snapshot in snapshots:
        if snapshot.volume_id is not None and snapshot.usable:
            by_volume[snapshot.volume_id].append(snapshot)
    newest: set[str] = set()
    for group in by_volume.values():
        group.sort(key=lambda s: s.started, reverse=True)
        newest.update(s.id for s in group[:keep])
    return newest


def is_aws_backup(snapshot: Snapshot) -> bool:
    """AWS Backup tags its recovery points ``aws:backup:source-resource`` and describes them as
    created by the AWS Backup service. (Deleting one through EC2 also fails; see
    :func:`reason_for_error`.)"""
    return any(key.startswith(AWS_BACKUP_TAG_PREFIX) for key in snapshot.tags) or (
        AWS_BACKUP_DESCRIPTION in snapshot.description.lower()
    )


def skip_reason(
    snapshot: Snapshot,
    *,
    owned: Mapping[str, str] | None,
    referenced: set[str],
    locked: set[str],
    newest: set[str],
) -> str | None:
    """Why an expired snapshot must stay, or None when it may go."""
    if owned is not None and not carries(snapshot.tags, owned):
        return NOT_OWNED
    if is_permanent(snapshot.tags):
        return PERMANENT
    if is_aws_backup(snapshot):
        return AWS_BACKUP
    if snapshot.id in referenced:
        return AMI
    if snapshot.id in locked:
        return LOCKED
    if snapshot.id in newest:
        return NEWEST_OF_VOLUME
    return None


def plan(
    snapshots: Sequence[Snapshot],
    *,
    settings: Settings,
    referenced: set[str],
    locked: set[str],
    now: datetime,
    outcome: Outcome,
) -> list[Snapshot]:
    """The expired snapshots that may be deleted, oldest first; skips counted in ``outcome``."""
    cutoff = now - timedelta(days=settings.retention_days)
    newest = newest_of_each_volume(snapshots, settings.min_keep_per_volume)
    owned = settings.owned_tags()
    due: list[Snapshot] = []
    for snapshot in snapshots:
        if snapshot.started >= cutoff:
            continue
        reason = skip_reason(
            snapshot, owned=owned, referenced=referenced, locked=locked, newest=newest
        )
        if reason is None:
            due.append(snapshot)
        else:
            outcome.skipped[reason] += 1
    due.sort(key=lambda s: s.started)
    return due


def reason_for_error(error: ClientError) -> str:
    """What a refused delete means: a skip rule EC2 enforced, or a real failure."""
    code = error.response.get("Error", {}).get("Code", "")
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code == "InvalidSnapshot.InUse":
        # "... is currently in use by ami-...", or "... enabled for fast restores in ..."
        return AMI if "ami-" in message else IN_USE
    if code == "InvalidParameterValue" and "aws backup" in message.lower():
        return AWS_BACKUP  # "This snapshot is managed by the AWS Backup service ..."
    if code == "InvalidSnapshot.NotFound":
        return ALREADY_DELETED
    return FAILED


def is_systemic(error: Exception) -> bool:
    """Whether the next delete would fail the same way: the SDK gave up on the connection,
    or EC2 denied, throttled (after the retries) or failed itself."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in SYSTEMIC_ERROR_CODES
    return isinstance(error, BotoCoreError)


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'ClientError')}: {str(details.get('Message', ''))[:200]}"
    return type(error).__name__


def delete(ec2: Any, due: Sequence[Snapshot], *, deadline: Deadline, outcome: Outcome) -> None:
    """Deletes ``due`` in order until done, out of time, or failing systemically.

    The deadline is checked before each delete: it lies far enough before the timeout for
    one more delete at its worst (every retry) and the report.
    """
    consecutive_failures = 0
    for index, snapshot in enumerate(due):
        if deadline.expired() or consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            outcome.remaining = len(due) - index
            logger.warning(
                "Stopping early; the next run continues",
                extra={
                    "remaining": outcome.remaining,
                    "why": "time" if deadline.expired() else "consecutive failures",
                },
            )
            return
        if outcome.dry_run:
            outcome.deleted.append(snapshot.id)
            continue
        try:
            ec2.delete_snapshot(SnapshotId=snapshot.id)
        except (ClientError, BotoCoreError) as error:
            reason = reason_for_error(error) if isinstance(error, ClientError) else FAILED
            outcome.skipped[reason] += 1
            if reason == FAILED:
                if is_systemic(error):
                    consecutive_failures += 1
                outcome.failures.append({"snapshot_id": snapshot.id, "error": _describe(error)})
                logger.error(
                    "Snapshot not deleted",
                    extra={"snapshot_id": snapshot.id, "error": _describe(error)},
                )
            continue
        consecutive_failures = 0
        outcome.deleted.append(snapshot.id)


def clean_up(
    ec2: Any, *, settings: Settings, deadline: Deadline, now: datetime | None = None
) -> Outcome:
    """One cleanup run. Raises only when it cannot list (then nothing was deleted)."""
    outcome = Outcome(dry_run=settings.dry_run)
    snapshots = list(list_snapshots(ec2))
    referenced = ami_snapshot_ids(ec2)
    locked = locked_snapshot_ids(ec2)
    due = plan(
        snapshots,
        settings=settings,
        referenced=referenced,
        locked=locked,
        now=now or utc_now(),
        outcome=outcome,
    )
    delete(ec2, due, deadline=deadline, outcome=outcome)
    return outcome


def worth_reporting(outcome: Outcome) -> bool:
    """Anything (would have been) deleted, or failed: quiet weeks send nothing."""
    return bool(outcome.deleted or outcome.failures)


def report(
    outcome: Outcome, *, settings: Settings, topic_arn: str, environment: str, sns: Any
) -> str:
    """Publishes the run's summary, lists cut to what an e-mail can carry."""
    where = f" ({environment})" if environment else ""
    verb = "would delete" if outcome.dry_run else "deleted"
    line = f"opskit snapshot cleanup{where}: {verb} {len(outcome.deleted)}"
    if outcome.failures:
        line += f", {len(outcome.failures)} failed"
    if outcome.remaining:
        line += f", {outcome.remaining} left for the next run"
    body = {
        **outcome.as_result(),
        "snapshot_ids": bounded(outcome.deleted, limit=REPORT_LIST_LIMIT),
        "failures": bounded(
            [f"{f['snapshot_id']}: {f['error']}" for f in outcome.failures],
            limit=REPORT_LIST_LIMIT,
        ),
        "environment": environment or None,
        "retention_days": settings.retention_days,
        "scope": settings.scope,
        "min_keep_per_volume": settings.min_keep_per_volume,
    }
    return publish(topic_arn, subject_line=line, message=as_json(body), sns=sns)


def ec2_client() -> Any:
    """EC2 with adaptive retries: a cleanup makes thousands of calls and will be throttled."""
    return client("ec2", retry_mode=RETRY_MODE, max_attempts=MAX_ATTEMPTS)


def sns_client() -> Any:
    return client("sns")


def is_smoke_test(event: Any) -> bool:
    """The deployment's post-traffic hook invokes new versions with this event."""
    marker = event.get("opskit") if isinstance(event, Mapping) else None
    return isinstance(marker, Mapping) and marker.get("smokeTest") is True


def check_configuration(settings: Settings, ec2: Any) -> dict[str, Any]:
    """Configuration and the right to list, without deleting or reporting anything."""
    require_env("SNS_TOPIC_ARN")
    ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5)
    ec2.describe_locked_snapshots(MaxResults=5)
    return {"smokeTest": "passed", "scope": settings.scope}


def _deadline(context: Any) -> Deadline:
    return Deadline.from_context(
        context,
        margin_seconds=DEADLINE_MARGIN_SECONDS,
        margin_fraction=DEADLINE_MARGIN_FRACTION,
        clock=clock,
    )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    settings = read_settings(event)
    environment = settings.environment
    if environment:
        metrics.add_dimension(name="environment", value=environment)
    if is_smoke_test(event):
        result = check_configuration(settings, ec2_client())
        logger.info("Smoke test passed", extra=result)
        return result
    topic_arn = require_env("SNS_TOPIC_ARN")
    deadline = _deadline(context)
    logger.info("Snapshot cleanup starting", extra={"settings": asdict(settings)})

    outcome = clean_up(ec2_client(), settings=settings, deadline=deadline)

    result = outcome.as_result()
    metrics.add_metric(name="DeletedSnapshots", unit=MetricUnit.Count, value=len(outcome.deleted))
    metrics.add_metric(name="FailedDeletions", unit=MetricUnit.Count, value=len(outcome.failures))
    logger.info(
        "Snapshot cleanup finished",
        extra={
            **result,
            # One log event holds at most 256 KB; CloudTrail has every DeleteSnapshot.
            "snapshot_ids": bounded(outcome.deleted, limit=REPORT_LIST_LIMIT),
            "failures": outcome.failures[:REPORT_LIST_LIMIT],
        },
    )
    if worth_reporting(outcome):
        report(
            outcome,
            settings=settings,
            topic_arn=topic_arn,
            environment=environment,
            sns=sns_client(),
        )
    return result


imports_done()
