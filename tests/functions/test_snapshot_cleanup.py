"""Specification of the EBS snapshot cleanup (opskit/functions/snapshot_cleanup/app.py).

The handler runs for real against moto's ThreadedMotoServer over HTTP. Each test works in
an AWS account of its own (an assumed role into a fresh account id), so nothing another
test leaves behind is ever a candidate, and default AMIs are kept out
(``MOTO_EC2_LOAD_DEFAULT_AMIS=false``). Snapshot start times are backdated through moto's
backend objects, reachable because the server runs in this process. Reports are read
from an SQS queue subscribed to the SNS topic.

What moto cannot do, and what stands in for it:
- ``describe_snapshots`` ignores ``MaxResults`` (everything comes in one page) and
  ``OwnerIds`` (it would list other accounts' snapshots too), so pagination across pages
  is specified with botocore's ``Stubber`` on a real client, whose expected parameters
  pin ``OwnerIds=["self"]``, the page size and each ``NextToken``.
- ``register_image`` ignores the block device mappings it is given and makes a snapshot
  of its own; the AMI test protects that snapshot.
- ``DeleteSnapshot`` never refuses a snapshot managed by AWS Backup, and lets tests set
  ``aws:`` tags (AWS does not; AWS Backup does). The refusals EC2 enforces (in use by an
  AMI, managed by AWS Backup, already gone, denied) are stubbed with their real codes and
  messages.
- ``DescribeLockedSnapshots`` is not implemented: a botocore ``before-call`` hook on the
  handler's EC2 client answers it from the test's table of locks (``Account.locks``),
  honouring the request's ``lock-state`` filter, in one page; its pagination is specified
  with the ``Stubber``.
- IAM conditions are not enforced; the delete policy is specified in
  tests/test_snapshot_cleanup.py.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.backends import get_backend
from opskit_common import clients
from opskit_common.config import ConfigurationError
from opskit_common.deadline import Deadline
from opskit_common.events import MalformedEventError
from opskit_common.tags import BACKUP_OWNERSHIP_TAGS

from tests.functions.conftest import REGION, LambdaContext, load_handler
from tests.functions.snapshot_locks import answer_locked_snapshots

# Runs that stop before counting anything (refused input, the smoke test) publish no metric.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

OWNED = {**BACKUP_OWNERSHIP_TAGS, "Environment": "dev"}
"""Made by the backup function of dev, the ENVIRONMENT of every test here."""
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_account_ids = itertools.count(210_000_000_001)


@dataclass
class Account:
    """One test's AWS account on the moto server, and how to look inside it."""

    id: str
    ec2: Any
    sqs: Any
    queue_url: str
    locks: dict[str, str] = field(default_factory=dict)
    """Snapshot id -> lock state, as DescribeLockedSnapshots would answer."""

    def answer_describe_locked_snapshots(self, handler_ec2: Any) -> None:
        """Makes the handler's EC2 client answer DescribeLockedSnapshots from ``locks``."""
        answer_locked_snapshots(handler_ec2, self.locks, self.id)

    @property
    def backend(self) -> Any:
        return get_backend("ec2")[self.id][REGION]

    def volume(self) -> str:
        return str(self.ec2.create_volume(Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"])

    def snapshot(
        self,
        *,
        age_days: float,
        tags: dict[str, str] | None = None,
        volume: str | None = None,
        description: str = "",
    ) -> str:
        """A snapshot started ``age_days`` ago (backdated in moto's backend)."""
        extra: dict[str, Any] = {}
        if tags:
            extra["TagSpecifications"] = [
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ]
        snapshot_id = str(
            self.ec2.create_snapshot(
                VolumeId=volume or self.volume(), Description=description, **extra
            )["SnapshotId"]
        )
        self.backend.snapshots[snapshot_id].start_time = datetime.now(UTC) - timedelta(
            days=age_days
        )
        return snapshot_id

    def snapshot_ids(self) -> set[str]:
        return {s["SnapshotId"] for s in self.ec2.describe_snapshots()["Snapshots"]}

    def reports(self) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def account(aws_environment: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    """A fresh account: every client made through boto3's default session (the handler's
    too) signs with an assumed role's credentials, which moto maps to the role's account."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    account_id = str(next(_account_ids))
    session = boto3._get_default_session()._session  # kept: a new one re-reads every model
    before = session.get_credentials()
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/opskit-snapshot-cleanup",
        RoleSessionName="snapshot-cleanup-test",
    )["Credentials"]
    session.set_credentials(
        credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
    )
    try:
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="opskit-reports")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="opskit-reports")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

        monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
        monkeypatch.setenv("ENVIRONMENT", "dev")
        for name in ("RETENTION_DAYS", "SCOPE", "MIN_KEEP_PER_VOLUME"):
            monkeypatch.delenv(name, raising=False)
        yield Account(
            id=account_id,
            ec2=boto3.client("ec2", region_name=REGION),
            sqs=sqs,
            queue_url=queue_url,
        )
    finally:
        session.set_credentials(before.access_key, before.secret_key, before.token)


@pytest.fixture
def app(account: Account) -> ModuleType:
    module = load_handler("snapshot_cleanup")
    account.answer_describe_locked_snapshots(module.ec2_client())
    return module


@pytest.fixture
def run(app: ModuleType) -> Callable[..., dict[str, Any]]:
    def invoke(event: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
        return app.lambda_handler(event or {}, context or LambdaContext())  # type: ignore[no-any-return]

    return invoke


def one_report(account: Account) -> tuple[str, dict[str, Any]]:
    [envelope] = account.reports()
    return envelope["Subject"], json.loads(envelope["Message"])


# --- deleting ---------------------------------------------------------------------------


def test_given_expired_snapshots_of_the_backup_function_then_they_are_deleted_and_reported(
    account: Account, run: Callable[..., dict[str, Any]]
) -> None:
    volume = account.volume()
    oldest = account.snapshot(age_days=45, tags=OWNED, volume=volume)
    older = account.snapshot(age_days=31, tags=OWNED, volume=volume)
    recent = account.snapshot(age_days=29, tags=OWNED, volume=volume)

    result = run()

    assert result == {
        "dry_run": False,
        "deleted_count": 2,
        "snapshot_ids": [oldest, older],
        "skipped": {},
        "remaining": 0,
    }
    assert account.snapshot_ids() == {recent}
    subject, body = one_report(account)
    assert subject == "opskit snapshot cleanup (dev): deleted 2"
    assert body["snapshot_ids"] == [oldest, older]
    assert (body["retention_days"], body["scope"], body["environment"]) == (30, "owned", "dev")


def test_the_event_retention_overrides_the_environment(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_DAYS", "60")
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    expired = account.snapshot(age_days=20, tags=OWNED)

    assert run()["deleted_count"] == 0
    assert run({"retention_days": 10})["snapshot_ids"] == [expired]
    assert account.snapshot_ids() == set()


def test_a_quiet_run_deletes_nothing_and_sends_no_report(
    account: Account, run: Callable[..., dict[str, Any]]
) -> None:
    account.snapshot(age_days=3, tags=OWNED)

    assert run() == {
        "dry_run": False,
        "deleted_count": 0,
        "snapshot_ids": [],
        "skipped": {},
        "remaining": 0,
    }
    assert account.reports() == []


def test_a_dry_run_changes_nothing_and_reports_what_it_would_delete(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    first = account.snapshot(age_days=90, tags=OWNED)
    second = account.snapshot(age_days=60, tags=OWNED)
    before = account.snapshot_ids()

    result = run({"dry_run": True})

    assert result["dry_run"] is True
    assert result["snapshot_ids"] == [first, second] and result["deleted_count"] == 2
    assert account.snapshot_ids() == before
    subject, body = one_report(account)
    assert subject == "opskit snapshot cleanup (dev): would delete 2"
    assert body["dry_run"] is True


# --- what is never deleted ----------------------------------------------------------------


def test_a_snapshot_tagged_retention_permanent_is_never_deleted(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    kept = account.snapshot(age_days=400, tags={**OWNED, "Retention": "Permanent"})

    result = run()

    assert (result["deleted_count"], result["skipped"]) == (0, {"permanent": 1})
    assert kept in account.snapshot_ids()


def test_a_snapshot_referenced_by_an_ami_of_the_account_is_never_deleted(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    image_id = account.ec2.register_image(Name="golden-image", RootDeviceName="/dev/sda1")[
        "ImageId"
    ]
    [image] = account.ec2.describe_images(ImageIds=[image_id])["Images"]
    referenced = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]  # moto's own snapshot
    account.ec2.create_tags(
        Resources=[referenced], Tags=[{"Key": k, "Value": v} for k, v in OWNED.items()]
    )
    account.backend.snapshots[referenced].start_time = datetime.now(UTC) - timedelta(days=90)
    unreferenced = account.snapshot(age_days=90, tags=OWNED)

    dry = run({"dry_run": True})  # moto refuses the delete too; a dry run relies on the AMI list
    result = run()

    assert dry["snapshot_ids"] == [unreferenced] and dry["skipped"] == {"ami": 1}

    assert result["snapshot_ids"] == [unreferenced]
    assert result["skipped"] == {"ami": 1}
    assert referenced in account.snapshot_ids()


def test_a_snapshot_managed_by_aws_backup_is_never_deleted_even_with_scope_all(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOPE", "all")
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    tagged = account.snapshot(
        age_days=100,
        tags={"aws:backup:source-resource": "arn:aws:ec2:eu-west-1:1:volume/vol-1"},
    )
    described = account.snapshot(
        age_days=100, description="This snapshot is created by the AWS Backup service."
    )

    result = run()

    assert (result["deleted_count"], result["skipped"]) == (0, {"aws_backup": 2})
    assert {tagged, described} <= account.snapshot_ids()


def test_the_newest_snapshots_of_each_volume_are_kept_counting_all_of_its_snapshots(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "2")
    busy = account.volume()
    oldest = account.snapshot(age_days=50, tags=OWNED, volume=busy)
    older = account.snapshot(age_days=40, tags=OWNED, volume=busy)
    second_newest = account.snapshot(age_days=35, tags=OWNED, volume=busy)
    manual = account.snapshot(age_days=1, volume=busy)  # not owned, but one of the newest two
    quiet = account.volume()
    only_two = {account.snapshot(age_days=d, tags=OWNED, volume=quiet) for d in (70, 60)}

    result = run()

    assert result["snapshot_ids"] == [oldest, older]
    assert result["skipped"] == {"newest_of_volume": 3}
    assert account.snapshot_ids() == {second_newest, manual, *only_two}


def test_with_scope_owned_snapshots_without_both_ownership_tags_are_not_touched(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    untouched = {
        account.snapshot(age_days=90),
        account.snapshot(age_days=90, tags={"AutomatedBackup": "true"}),
        account.snapshot(age_days=90, tags={**OWNED, "CreatedBy": "someone-else"}),
    }

    result = run()

    assert (result["deleted_count"], result["skipped"]) == (0, {"not_owned": 3})
    assert account.snapshot_ids() == untouched


def test_with_scope_owned_another_environments_backups_are_never_touched(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one account shared by dev and prod, and this cleanup (dev) with a 7-day retention
    monkeypatch.setenv("RETENTION_DAYS", "7")
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    prod_backups = {
        account.snapshot(age_days=20, tags={**OWNED, "Environment": "prod"}),
        account.snapshot(age_days=20, tags=dict(BACKUP_OWNERSHIP_TAGS)),  # no environment
    }
    dev_backup = account.snapshot(age_days=20, tags=OWNED)

    # WHEN it runs
    result = run()

    # THEN only dev's own backup went
    assert result["snapshot_ids"] == [dev_backup]
    assert result["skipped"] == {"not_owned": 2}
    assert account.snapshot_ids() == prod_backups


def test_scope_all_widens_the_candidates_to_every_own_snapshot_and_keeps_the_other_rules(
    account: Account, run: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOPE", "all")
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    manual = account.snapshot(age_days=90)
    permanent = account.snapshot(age_days=90, tags={"Retention": "permanent"})

    result = run()

    assert result["snapshot_ids"] == [manual]
    assert result["skipped"] == {"permanent": 1}
    assert account.snapshot_ids() == {permanent}


def test_a_locked_snapshot_is_skipped_and_never_attempted(
    account: Account, app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN expired backups under EBS snapshot locks, one lock already expired
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    governed, compliant, cooling, unlocked = (
        account.snapshot(age_days=90 - i, tags=OWNED) for i in range(4)
    )
    account.locks.update(
        {
            governed: "governance",
            compliant: "compliance",
            cooling: "compliance-cooloff",
            unlocked: "expired",
        }
    )
    attempted: list[str] = []
    app.ec2_client().meta.events.register(
        "before-parameter-build.ec2.DeleteSnapshot",
        lambda params, **_: attempted.append(params["SnapshotId"]),
    )

    # WHEN the cleanup runs
    result = app.lambda_handler({}, LambdaContext())

    # THEN the locked ones are skipped as locked, without a delete; the expired lock's goes
    assert result["skipped"] == {"locked": 3}
    assert result["snapshot_ids"] == [unlocked] and attempted == [unlocked]
    assert account.snapshot_ids() == {governed, compliant, cooling}


# --- time budget -------------------------------------------------------------------------


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_time_budget_stops_the_run_cleanly_and_the_next_run_continues(
    account: Account, app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    expired = [account.snapshot(age_days=100 - i, tags=OWNED) for i in range(12)]
    clock = Clock()
    monkeypatch.setattr(app, "clock", clock)

    def each_delete_takes_a_second(**_: Any) -> None:
        clock.now += 1

    app.ec2_client().meta.events.register(
        "after-call.ec2.DeleteSnapshot", each_delete_takes_a_second
    )

    # 10 s left (less than twice the margin), half of it kept free: time for 5 deletes.
    first = app.lambda_handler({}, LambdaContext(remaining_seconds=10))

    assert first["snapshot_ids"] == expired[:5], "oldest first"
    assert first["remaining"] == 7
    assert account.snapshot_ids() == set(expired[5:])
    subject, _ = one_report(account)
    assert subject == "opskit snapshot cleanup (dev): deleted 5, 7 left for the next run"

    second = app.lambda_handler({}, LambdaContext())

    assert (second["snapshot_ids"], second["remaining"]) == (expired[5:], 0)
    assert account.snapshot_ids() == set()


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "env", "error", "message"),
    [
        ({"dryrun": True}, {}, MalformedEventError, "unknown field 'dryrun'"),
        ({"dry_run": "yes"}, {}, MalformedEventError, "'dry_run' must be true or false"),
        ({"retention_days": 0}, {}, MalformedEventError, "'retention_days' must be in 1..36500"),
        ({}, {"SCOPE": "everything"}, ConfigurationError, "SCOPE has invalid value"),
        ({}, {"MIN_KEEP_PER_VOLUME": "-1"}, ConfigurationError, "must be >= 0"),
        ({}, {"RETENTION_DAYS": "thirty"}, ConfigurationError, "must be a whole number"),
        ({}, {"SNS_TOPIC_ARN": ""}, ConfigurationError, "SNS_TOPIC_ARN is not set"),
        ({}, {"ENVIRONMENT": " "}, ConfigurationError, "ENVIRONMENT is not set"),
    ],
)
def test_bad_events_and_settings_are_refused_before_anything_is_touched(
    account: Account,
    run: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    event: dict[str, Any],
    env: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    expired = account.snapshot(age_days=400, tags=OWNED)

    with pytest.raises(error, match=message):
        run(event)

    assert account.snapshot_ids() == {expired}


def test_the_deployment_smoke_test_checks_settings_and_listing_and_deletes_nothing(
    account: Account, run: Callable[..., dict[str, Any]]
) -> None:
    expired = account.snapshot(age_days=400, tags=OWNED)

    assert run({"opskit": {"smokeTest": True}}) == {"smokeTest": "passed", "scope": "owned"}
    assert account.snapshot_ids() == {expired}
    assert account.reports() == []


def test_the_ec2_client_retries_throttling_adaptively_within_the_time_kept_free(
    app: ModuleType,
) -> None:
    config = app.ec2_client().meta.config
    assert (config.retries["mode"], config.retries["total_max_attempts"]) == ("adaptive", 4)
    assert "cdk-opskit" in config.user_agent_extra, "the common settings still apply"
    # AND the margin before the timeout holds one delete at its worst (every attempt timing
    # out, the longest backoffs) and then the report
    report = clients.client("sns").meta.config
    worst = clients.longest_call_seconds(
        retry_mode=config.retries["mode"], max_attempts=config.retries["total_max_attempts"] - 1
    ) + clients.longest_call_seconds(
        retry_mode=report.retries["mode"], max_attempts=report.retries["total_max_attempts"] - 1
    )
    assert worst <= app.DEADLINE_MARGIN_SECONDS
    deadline = app._deadline(LambdaContext(remaining_seconds=840))
    assert deadline.remaining() == pytest.approx(840 - app.DEADLINE_MARGIN_SECONDS, abs=1)


# --- pagination and the refusals EC2 enforces (Stubber) ---------------------------------


def snapshot_item(
    snapshot_id: str,
    *,
    volume: str,
    age_days: float,
    tags: dict[str, str] | None = None,
    state: str = "completed",
) -> dict[str, Any]:
    return {
        "SnapshotId": snapshot_id,
        "VolumeId": volume,
        "StartTime": NOW - timedelta(days=age_days),
        "State": state,
        "OwnerId": "123456789012",
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }


LIST_SNAPSHOTS = {"OwnerIds": ["self"], "MaxResults": 1000}
LIST_IMAGES = {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000}
LIST_LOCKS = {
    "Filters": [
        {"Name": "lock-state", "Values": ["compliance-cooloff", "governance", "compliance"]}
    ],
    "MaxResults": 1000,
}


@pytest.fixture
def stubbed_ec2(aws_environment: str) -> Iterator[tuple[Any, Stubber]]:
    ec2 = boto3.client("ec2", region_name=REGION)
    with Stubber(ec2) as stubber:
        yield ec2, stubber
        stubber.assert_no_pending_responses()


def settings(app: ModuleType, **overrides: Any) -> Any:
    values = {
        "retention_days": 30,
        "dry_run": False,
        "scope": "owned",
        "min_keep_per_volume": 1,
        "environment": "dev",
    }
    return app.Settings(**{**values, **overrides})


def test_every_page_of_snapshots_and_images_is_read_before_anything_is_decided(
    stubbed_ec2: tuple[Any, Stubber],
) -> None:
    app = load_handler("snapshot_cleanup")
    ec2, stub = stubbed_ec2
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item("snap-a", volume="vol-1", age_days=50, tags=OWNED),
                snapshot_item("snap-b", volume="vol-2", age_days=45, tags=OWNED),
            ],
            "NextToken": "page-2",
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item("snap-c", volume="vol-1", age_days=1),  # makes snap-a deletable
                snapshot_item("snap-d", volume="vol-3", age_days=40, tags=OWNED),
            ],
            "NextToken": "page-3",
        },
        {**LIST_SNAPSHOTS, "NextToken": "page-2"},
    )
    stub.add_response(
        "describe_snapshots",
        {"Snapshots": [snapshot_item("snap-e", volume="vol-3", age_days=2)]},
        {**LIST_SNAPSHOTS, "NextToken": "page-3"},
    )
    stub.add_response(
        "describe_images",
        {"Images": [{"ImageId": "ami-1", "BlockDeviceMappings": []}], "NextToken": "images-2"},
        LIST_IMAGES,
    )
    stub.add_response(
        "describe_images",
        {
            "Images": [
                {
                    "ImageId": "ami-2",
                    "BlockDeviceMappings": [
                        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-b"}}
                    ],
                }
            ]
        },
        {**LIST_IMAGES, "NextToken": "images-2"},
    )
    stub.add_response("describe_locked_snapshots", {"Snapshots": []}, LIST_LOCKS)
    for deleted in ("snap-a", "snap-d"):  # in this order: oldest first
        stub.add_response("delete_snapshot", {}, {"SnapshotId": deleted})

    outcome = app.clean_up(ec2, settings=settings(app), deadline=Deadline(900), now=NOW)

    assert outcome.as_result() == {
        "dry_run": False,
        "deleted_count": 2,
        "snapshot_ids": ["snap-a", "snap-d"],
        "skipped": {"ami": 1},
        "remaining": 0,
    }


def test_a_failed_or_unfinished_snapshot_never_counts_as_one_of_the_newest(
    stubbed_ec2: tuple[Any, Stubber],
) -> None:
    app = load_handler("snapshot_cleanup")
    ec2, stub = stubbed_ec2
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item("snap-good", volume="vol-1", age_days=60, tags=OWNED),
                snapshot_item("snap-old", volume="vol-1", age_days=90, tags=OWNED),
                snapshot_item("snap-bad", volume="vol-1", age_days=1, state="error"),
                snapshot_item("snap-copy", volume="vol-ffffffff", age_days=80, tags=OWNED),
            ]
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response("describe_images", {"Images": []}, LIST_IMAGES)
    stub.add_response("describe_locked_snapshots", {"Snapshots": []}, LIST_LOCKS)
    for deleted in ("snap-old", "snap-copy"):
        stub.add_response("delete_snapshot", {}, {"SnapshotId": deleted})

    outcome = app.clean_up(ec2, settings=settings(app), deadline=Deadline(900), now=NOW)

    assert outcome.deleted == ["snap-old", "snap-copy"]
    assert dict(outcome.skipped) == {"newest_of_volume": 1}, "snap-good is the newest usable"


def refusal(code: str, message: str) -> dict[str, Any]:
    return {"service_error_code": code, "service_message": message, "http_status_code": 400}


def botocore_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "DeleteSnapshot")


def test_refusals_ec2_enforces_are_skips_and_real_failures_are_reported_while_the_rest_proceed(
    account: Account,
    app: ModuleType,
    stubbed_ec2: tuple[Any, Stubber],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MIN_KEEP_PER_VOLUME", "0")
    ec2, stub = stubbed_ec2
    monkeypatch.setattr(app, "ec2_client", lambda: ec2)
    names = ["in-ami", "fast-restore", "aws-backup", "gone", "denied", "fine"]
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item(f"snap-{name}", volume=f"vol-{i}", age_days=100 - i, tags=OWNED)
                for i, name in enumerate(names)
            ]
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response("describe_images", {"Images": []}, LIST_IMAGES)
    stub.add_response("describe_locked_snapshots", {"Snapshots": []}, LIST_LOCKS)
    stub.add_client_error(
        "delete_snapshot",
        **refusal("InvalidSnapshot.InUse", "The snapshot snap-in-ami is currently in use by ami-1"),
        expected_params={"SnapshotId": "snap-in-ami"},
    )
    stub.add_client_error(
        "delete_snapshot",
        **refusal(
            "InvalidSnapshot.InUse",
            "The snapshot snap-fast-restore is currently enabled for fast restores in "
            "eu-west-1b. Fast snapshot restores must be disabled within all Availability "
            "Zones before the snapshot may be deleted.",
        ),
        expected_params={"SnapshotId": "snap-fast-restore"},
    )
    stub.add_client_error(
        "delete_snapshot",
        **refusal(
            "InvalidParameterValue",
            "This snapshot is managed by the AWS Backup service and cannot be deleted via EC2 "
            "APIs. If you wish to delete this snapshot, please do so via the Backup console.",
        ),
        expected_params={"SnapshotId": "snap-aws-backup"},
    )
    stub.add_client_error(
        "delete_snapshot",
        **refusal("InvalidSnapshot.NotFound", "The snapshot 'snap-gone' does not exist."),
        expected_params={"SnapshotId": "snap-gone"},
    )
    stub.add_client_error(
        "delete_snapshot",
        **refusal("UnauthorizedOperation", "You are not authorized to perform this operation."),
        expected_params={"SnapshotId": "snap-denied"},
    )
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-fine"})

    result = app.lambda_handler({}, LambdaContext())

    assert result["snapshot_ids"] == ["snap-fine"]
    assert result["skipped"] == {
        "already_deleted": 1,
        "ami": 1,
        "aws_backup": 1,
        "failed": 1,
        "in_use": 1,
    }
    subject, body = one_report(account)
    assert subject == "opskit snapshot cleanup (dev): deleted 1, 1 failed"
    assert body["failures"] == [
        "snap-denied: UnauthorizedOperation: You are not authorized to perform this operation."
    ]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [record] = [r for r in emf if "FailedDeletions" in r]
    assert (record["FailedDeletions"], record["DeletedSnapshots"]) == ([1.0], [1.0])
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "opskit"
    assert set(record["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == {
        "service",
        "environment",
    }
    assert (record["service"], record["environment"]) == ("snapshot-cleanup", "dev")


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        ("InvalidSnapshot.InUse", "The snapshot snap-1 is currently in use by ami-1", "ami"),
        (
            "InvalidSnapshot.InUse",
            "The snapshot snap-1 is currently enabled for fast restores in eu-west-1b.",
            "in_use",
        ),
        (
            "InvalidParameterValue",
            "This snapshot is managed by the AWS Backup service and cannot be deleted via EC2 "
            "APIs.",
            "aws_backup",
        ),
        ("InvalidParameterValue", "Value (snap-1) for parameter snapshotId is invalid.", "failed"),
        ("InvalidSnapshot.NotFound", "The snapshot 'snap-1' does not exist.", "already_deleted"),
        ("UnauthorizedOperation", "You are not authorized to perform this operation.", "failed"),
    ],
    ids=["ami", "fast-restore", "aws-backup", "other-invalid-parameter", "gone", "denied"],
)
def test_each_refusal_is_told_apart_by_its_code_and_message(
    app: ModuleType, code: str, message: str, reason: str
) -> None:
    """A refusal EC2 would repeat is a skip; any other, even of a known code, is a failure."""
    error = botocore_error(code, message)

    assert app.reason_for_error(error) == reason


def test_after_twenty_failures_in_a_row_the_run_stops_and_leaves_the_rest(
    stubbed_ec2: tuple[Any, Stubber],
) -> None:
    app = load_handler("snapshot_cleanup")
    ec2, stub = stubbed_ec2
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item(f"snap-{i:02}", volume=f"vol-{i}", age_days=100 - i, tags=OWNED)
                for i in range(25)
            ]
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response("describe_images", {"Images": []}, LIST_IMAGES)
    stub.add_response("describe_locked_snapshots", {"Snapshots": []}, LIST_LOCKS)
    for i in range(20):
        stub.add_client_error(
            "delete_snapshot",
            **refusal("UnauthorizedOperation", "You are not authorized."),
            expected_params={"SnapshotId": f"snap-{i:02}"},
        )

    outcome = app.clean_up(
        ec2, settings=settings(app, min_keep_per_volume=0), deadline=Deadline(900), now=NOW
    )

    assert (len(outcome.failures), outcome.remaining, outcome.deleted) == (20, 5, [])


def test_refusals_of_single_snapshots_never_stop_the_run_however_many_in_a_row(
    stubbed_ec2: tuple[Any, Stubber],
) -> None:
    """A lock placed after the listing, say: EC2 refuses that snapshot, not the account."""
    app = load_handler("snapshot_cleanup")
    ec2, stub = stubbed_ec2
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item(f"snap-{i:02}", volume=f"vol-{i}", age_days=100 - i, tags=OWNED)
                for i in range(26)
            ]
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response("describe_images", {"Images": []}, LIST_IMAGES)
    stub.add_response("describe_locked_snapshots", {"Snapshots": []}, LIST_LOCKS)
    for i in range(25):
        stub.add_client_error(
            "delete_snapshot",
            **refusal("IncorrectState", f"snap-{i:02} is locked and can't be deleted."),
            expected_params={"SnapshotId": f"snap-{i:02}"},
        )
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-25"})

    outcome = app.clean_up(
        ec2, settings=settings(app, min_keep_per_volume=0), deadline=Deadline(900), now=NOW
    )

    assert (len(outcome.failures), outcome.remaining, outcome.deleted) == (25, 0, ["snap-25"])


def test_every_page_of_locked_snapshots_is_read_and_the_locked_ones_skipped(
    stubbed_ec2: tuple[Any, Stubber],
) -> None:
    app = load_handler("snapshot_cleanup")
    ec2, stub = stubbed_ec2
    stub.add_response(
        "describe_snapshots",
        {
            "Snapshots": [
                snapshot_item(f"snap-{name}", volume=f"vol-{name}", age_days=60, tags=OWNED)
                for name in ("a", "b", "c")
            ]
        },
        LIST_SNAPSHOTS,
    )
    stub.add_response("describe_images", {"Images": []}, LIST_IMAGES)
    stub.add_response(
        "describe_locked_snapshots",
        {"Snapshots": [{"SnapshotId": "snap-a", "LockState": "governance"}], "NextToken": "p2"},
        LIST_LOCKS,
    )
    stub.add_response(
        "describe_locked_snapshots",
        {"Snapshots": [{"SnapshotId": "snap-c", "LockState": "compliance"}]},
        {**LIST_LOCKS, "NextToken": "p2"},
    )
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-b"})

    outcome = app.clean_up(
        ec2, settings=settings(app, min_keep_per_volume=0), deadline=Deadline(900), now=NOW
    )

    assert (outcome.deleted, dict(outcome.skipped)) == (["snap-b"], {"locked": 2})
