"""Specification of the backup function (`opskit/functions/backup`).

Stand-ins: EC2, RDS, SNS and SQS are moto's ThreadedMotoServer over HTTP (the handler's
clients reach it through AWS_ENDPOINT_URL); run reports are read back from an SQS queue
subscribed to the reports topic. Where moto cannot produce what AWS does, the test says so:

- snapshot ages: moto stamps snapshots "now", so tests backdate them through moto's
  backend objects, which live in this process (the server runs in a thread);
- instance-store devices: moto renders every block device as EBS, so one test adds an
  instance-store entry to the DescribeInstances answer with a botocore `after-call` hook;
- failures of one resource: injected with a botocore `before-call` hook on the handler's
  own client that raises the ClientError AWS would answer, for that resource only;
- pagination of DescribeSnapshots: moto ignores MaxResults, so one test serves two pages
  from botocore's `Stubber`.

moto is reset before each test, so each starts from an empty account (moto's EC2 module
takes seconds to import once; a reset costs milliseconds). Names still carry a per-test
id (`aws.env`, `aws.name(...)`), and tests look only at their own volumes and databases.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
import uuid
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
from opskit_common.deadline import Deadline
from opskit_common.events import MalformedEventError
from opskit_common.reports import MAX_MESSAGE_BYTES, MAX_SUBJECT_CHARS, fit_message
from opskit_common.reports import subject as sns_subject

from tests.functions.conftest import REGION, LambdaContext, load_handler
from tests.functions.snapshot_locks import answer_locked_snapshots

ACCOUNT = "123456789012"
IMAGE = "ami-12345678"
OWNED = {"AutomatedBackup": "true", "CreatedBy": "opskit-backup"}
RDS_IDENTIFIER = re.compile(r"^[a-z](?!.*--)[a-z0-9-]*[a-z0-9]$")


@dataclass
class Aws:
    """Test-side clients, independent of the handler's, and this test's own names."""

    ec2: Any
    rds: Any
    sqs: Any
    queue_url: str
    id: str
    locks: dict[str, str] = field(default_factory=dict)
    """Snapshot id -> lock state, as DescribeLockedSnapshots answers the handler."""

    @property
    def env(self) -> str:
        """The environment this test backs up (the function's ENVIRONMENT)."""
        return f"dev-{self.id}"

    @property
    def other(self) -> str:
        """Another environment in the same account."""
        return f"staging-{self.id}"

    def name(self, base: str) -> str:
        """An RDS identifier unique to this test."""
        return f"{base}-{self.id}"

    def reports(self) -> list[dict[str, Any]]:
        """The SNS notifications delivered to this test's reports queue so far."""
        notifications: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return notifications
            notifications += [json.loads(m["Body"]) for m in messages]


def _reset_moto(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="module")
def test_clients(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """Test-side clients, made once: every new client parses its service model again.

    moto's backends are built without the default AMIs (and their snapshots) while this
    module runs, and reset afterwards so later modules do not see its snapshots.
    """
    previous = os.environ.get("MOTO_EC2_LOAD_DEFAULT_AMIS")
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    yield {
        name: boto3.client(
            name,
            region_name=REGION,
            endpoint_url=moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("ec2", "rds", "sns", "sqs")
    }
    _reset_moto(moto_endpoint)
    if previous is None:
        os.environ.pop("MOTO_EC2_LOAD_DEFAULT_AMIS", None)
    else:
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = previous


@pytest.fixture
def aws(aws_environment: str, test_clients: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Aws:
    """An empty account (moto reset), with a reports topic whose messages land in a queue."""
    _reset_moto(aws_environment)
    sns, sqs = test_clients["sns"], test_clients["sqs"]
    topic_arn = sns.create_topic(Name="opskit-reports")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="reports")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue["Attributes"]["QueueArn"])
    aws = Aws(test_clients["ec2"], test_clients["rds"], sqs, queue_url, uuid.uuid4().hex[:8])
    monkeypatch.setenv("ENVIRONMENT", aws.env)
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
    monkeypatch.delenv("BACKUP_RETENTION_DAYS", raising=False)
    return aws


@pytest.fixture
def backup(aws: Aws) -> ModuleType:
    module = load_handler("backup")
    answer_locked_snapshots(module.aws_client("ec2"), aws.locks, ACCOUNT)
    return module


@pytest.fixture
def logic() -> ModuleType:
    """The handler module, for tests of its plain functions that need no AWS."""
    return load_handler("backup")


# -- helpers ------------------------------------------------------------------------------


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def owned(environment: str, **extra: str) -> dict[str, str]:
    """The tags of a snapshot the backup function made for `environment`."""
    return {**OWNED, "Environment": environment, **extra}


def launch(
    aws: Aws, *, environment: str | None = None, backup: str | None = "true", extra_volumes: int = 0
) -> tuple[str, list[str]]:
    """An instance of this test's environment (unless given); returns its id and volume ids."""
    environment = environment or aws.env
    tags = {"Environment": environment, "Name": f"web-{environment}"}
    if backup is not None:
        tags["Backup"] = backup
    instance = aws.ec2.run_instances(
        ImageId=IMAGE,
        MinCount=1,
        MaxCount=1,
        BlockDeviceMappings=[
            {"DeviceName": f"/dev/sd{chr(ord('f') + i)}", "Ebs": {"VolumeSize": 8}}
            for i in range(extra_volumes)
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)}],
    )["Instances"][0]
    described = aws.ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
    mappings = described["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    return instance["InstanceId"], [m["Ebs"]["VolumeId"] for m in mappings]


def snapshots(aws: Aws, *volume_ids: str) -> dict[str, dict[str, Any]]:
    """The EBS snapshots of the given volumes, with their tags as a dict."""
    found = aws.ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": list(volume_ids)}]
    )["Snapshots"]
    return {
        s["SnapshotId"]: {**s, "Tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])}}
        for s in found
    }


def ebs_snapshot(aws: Aws, volume_id: str, *, days_old: float, **tags: str) -> str:
    snapshot_id = aws.ec2.create_snapshot(
        VolumeId=volume_id,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}] if tags else [],
    )["SnapshotId"]
    get_backend("ec2")[ACCOUNT][REGION].snapshots[snapshot_id].start_time = _naive_utc(days_old)
    return snapshot_id


def database(
    aws: Aws, identifier: str, *, environment: str | None = None, backup: bool = True
) -> None:
    tags = {"Environment": environment or aws.env, **({"Backup": "true"} if backup else {})}
    aws.rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin1",
        MasterUserPassword="password123",
        AllocatedStorage=20,
        Tags=tag_list(tags),
    )


def cluster(aws: Aws, identifier: str) -> None:
    aws.rds.create_db_cluster(
        DBClusterIdentifier=identifier,
        Engine="aurora-postgresql",
        MasterUsername="admin1",
        MasterUserPassword="password123",
        Tags=tag_list({"Environment": aws.env, "Backup": "true"}),
    )


def db_snapshot(aws: Aws, db: str, name: str, *, days_old: float, **tags: str) -> str:
    aws.rds.create_db_snapshot(
        DBInstanceIdentifier=db, DBSnapshotIdentifier=name, Tags=tag_list(tags)
    )
    get_backend("rds")[ACCOUNT][REGION].database_snapshots[name].created = _naive_utc(days_old)
    return name


def cluster_snapshot(aws: Aws, db: str, name: str, *, days_old: float, **tags: str) -> str:
    aws.rds.create_db_cluster_snapshot(
        DBClusterIdentifier=db, DBClusterSnapshotIdentifier=name, Tags=tag_list(tags)
    )
    get_backend("rds")[ACCOUNT][REGION].cluster_snapshots[name].created = _naive_utc(days_old)
    return name


def _naive_utc(days_old: float) -> datetime:
    """moto keeps naive UTC times."""
    return (datetime.now(UTC) - timedelta(days=days_old)).replace(tzinfo=None)


def db_snapshot_names(aws: Aws, db: str) -> set[str]:
    found = aws.rds.describe_db_snapshots(DBInstanceIdentifier=db, SnapshotType="manual")
    return {s["DBSnapshotIdentifier"] for s in found["DBSnapshots"]}


def cluster_snapshot_names(aws: Aws, db: str) -> set[str]:
    found = aws.rds.describe_db_cluster_snapshots(DBClusterIdentifier=db, SnapshotType="manual")
    return {s["DBClusterSnapshotIdentifier"] for s in found["DBClusterSnapshots"]}


def fail_calls(
    backup: ModuleType,
    service: str,
    operation: str,
    *,
    when: Callable[[dict[str, Any]], bool] = lambda _: True,
    code: str = "IncorrectState",
    message: str = "injected failure",
) -> None:
    """Makes the handler's own `service` client fail `operation` (for params matching
    `when`) with the ClientError AWS would answer."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if when(params):
            raise ClientError({"Error": {"Code": code, "Message": message}}, operation)

    backup.aws_client(service).meta.events.register(
        f"before-parameter-build.{service}.{operation}", refuse
    )


def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents the handler printed."""
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and '"_aws"' in line]


INJECTED = "IncorrectState: injected failure"


# -- selection and creation ---------------------------------------------------------------


def test_tagged_running_and_stopped_instances_get_one_snapshot_per_ebs_volume(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN a running and a stopped instance tagged for backup, the second with two data volumes
    running, running_volumes = launch(aws)
    stopped, stopped_volumes = launch(aws, extra_volumes=2)
    aws.ec2.stop_instances(InstanceIds=[stopped])
    # AND instances that must not be backed up: no Backup tag, Backup=false, another
    # environment, and a terminated one
    ignored = [
        launch(aws, backup=None),
        launch(aws, backup="false"),
        launch(aws, environment=aws.other),
    ]
    terminated = launch(aws)
    aws.ec2.terminate_instances(InstanceIds=[terminated[0]])
    tagged_afterwards: list[Any] = []
    backup.aws_client("ec2").meta.events.register(
        "before-call.ec2.CreateTags", lambda **call: tagged_afterwards.append(call)
    )

    # WHEN the nightly run happens
    result = backup.lambda_handler({}, lambda_context)

    # THEN exactly the tagged instances' volumes were snapshotted, once each
    volumes = running_volumes + stopped_volumes
    made = snapshots(aws, *volumes)
    assert sorted(result["created"]) == sorted(made)
    assert sorted(s["VolumeId"] for s in made.values()) == sorted(volumes)
    assert snapshots(aws, *terminated[1], *(v for _, vs in ignored for v in vs)) == {}
    assert (result["environment"], result["backup_type"], result["dry_run"]) == (
        aws.env,
        "all",
        False,
    )
    assert result["failed"] == [] and result["deleted"] == []
    # AND each snapshot was tagged in the CreateSnapshot call itself, never afterwards
    assert tagged_afterwards == []
    devices = {}
    for snapshot in made.values():
        tags = snapshot["Tags"]
        assert tags.items() >= owned(aws.env).items()
        assert tags["VolumeId"] == snapshot["VolumeId"]
        assert tags["InstanceId"] in (running, stopped)
        assert tags["Name"].startswith(f"web-{aws.env} /dev/")
        devices[snapshot["VolumeId"]] = tags["DeviceName"]
    assert {"/dev/sdf", "/dev/sdg"} <= {devices[v] for v in stopped_volumes}


def test_instance_store_devices_are_skipped_and_reported(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN an instance whose DescribeInstances answer also lists an instance-store device
    instance, volumes = launch(aws)

    def add_instance_store(parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed.get("Reservations", []):
            for described in reservation["Instances"]:
                described["BlockDeviceMappings"].append(
                    {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}
                )

    backup.aws_client("ec2").meta.events.register(
        "after-call.ec2.DescribeInstances", add_instance_store
    )

    # WHEN the run happens
    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    # THEN the EBS volume is snapshotted and the instance-store device skipped, not failed
    assert [s["VolumeId"] for s in snapshots(aws, *volumes).values()] == volumes
    assert len(result["created"]) == 1 and result["failed"] == []
    [report] = aws.reports()
    assert f"{instance} /dev/sdb: not an EBS volume (instance store)" in report["Message"]


def test_tagged_rds_instances_and_clusters_get_manual_snapshots_with_ownership_tags(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN a tagged DB instance and Aurora cluster, an instance that belongs to the
    # cluster, an untagged DB and another environment's DB
    orders, ledger = aws.name("orders"), aws.name("ledger")
    database(aws, orders)
    cluster(aws, ledger)
    aws.rds.create_db_instance(
        DBInstanceIdentifier=f"{ledger}-1",
        DBInstanceClass="db.r6g.large",
        Engine="aurora-postgresql",
        DBClusterIdentifier=ledger,
        Tags=tag_list({"Environment": aws.env, "Backup": "true"}),
    )
    database(aws, aws.name("scratch"), backup=False)
    database(aws, aws.name("elsewhere"), environment=aws.other)

    # WHEN an RDS run happens
    result = backup.lambda_handler({"backup_type": "rds"}, lambda_context)

    # THEN one instance snapshot and one cluster snapshot, named <db>-opskit-<timestamp>
    [instance_snapshot] = db_snapshot_names(aws, orders)
    [cluster_snap] = cluster_snapshot_names(aws, ledger)
    assert re.fullmatch(rf"{orders}-opskit-\d{{8}}-\d{{6}}", instance_snapshot)
    assert re.fullmatch(rf"{ledger}-opskit-\d{{8}}-\d{{6}}", cluster_snap)
    assert result["created"] == [instance_snapshot, cluster_snap] and result["failed"] == []
    for db in ("scratch", "elsewhere"):
        assert db_snapshot_names(aws, aws.name(db)) == set()
    # AND both carry the ownership and environment tags from their creation
    described = aws.rds.describe_db_snapshots(DBSnapshotIdentifier=instance_snapshot)
    tags = {t["Key"]: t["Value"] for t in described["DBSnapshots"][0]["TagList"]}
    assert tags.items() >= owned(aws.env, DBInstanceIdentifier=orders).items()
    described = aws.rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=cluster_snap)
    tags = {t["Key"]: t["Value"] for t in described["DBClusterSnapshots"][0]["TagList"]}
    assert tags.items() >= owned(aws.env, DBClusterIdentifier=ledger).items()
    # AND the cluster member is skipped with a hint rather than failed
    [report] = aws.reports()
    assert (
        f"{ledger}-1: member of DB cluster {ledger}; tag the cluster instead" in report["Message"]
    )


def test_databases_not_in_a_state_to_snapshot_are_skipped_with_the_reason_not_failed(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN tagged databases: one stopped, one in its automated backup window, one
    # optimizing its storage (RDS snapshots those), one available, and a stopped cluster
    stopped, backing_up, optimizing, available, ledger = (
        aws.name(n) for n in ("stopped", "busy", "growing", "orders", "ledger")
    )
    for name in (stopped, backing_up, optimizing, available):
        database(aws, name)
    cluster(aws, ledger)
    aws.rds.stop_db_instance(DBInstanceIdentifier=stopped)
    aws.rds.stop_db_cluster(DBClusterIdentifier=ledger)
    databases = get_backend("rds")[ACCOUNT][REGION].databases
    databases[backing_up].status = "backing-up"
    databases[backing_up].preferred_backup_window = "01:45-02:15"
    databases[optimizing].status = "storage-optimization"

    # WHEN an RDS run happens
    result = backup.lambda_handler({"backup_type": "rds"}, lambda_context)

    # THEN only the available and the storage-optimizing databases were snapshotted
    assert sorted(n.split("-opskit-")[0] for n in result["created"]) == sorted(
        [available, optimizing]
    )
    for name in (stopped, backing_up):
        assert db_snapshot_names(aws, name) == set()
    assert cluster_snapshot_names(aws, ledger) == set()
    # AND the others are skipped with their status, none failed
    assert result["failed"] == []
    [report] = aws.reports()
    needs = "(a manual snapshot needs available or storage-optimization)"
    assert f"{stopped}: status 'stopped', not snapshotted {needs}" in report["Message"]
    assert (
        f"{backing_up}: status 'backing-up', not snapshotted {needs}; its automated backup "
        "window is 01:45-02:15 UTC: schedule the backup outside it"
    ) in report["Message"]
    assert (
        f"{ledger}: status 'stopped', not snapshotted (a manual snapshot needs available)"
        in report["Message"]
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("orders", "orders-opskit-20261128-020000"),
        ("Orders_DB.v2", "orders-db-v2-opskit-20261128-020000"),
        ("9lives--db-", "db-9lives-db-opskit-20261128-020000"),
        ("a" * 63, "a" * 63 + "-opskit-20261128-020000"),
    ],
)
def test_rds_snapshot_identifiers_follow_the_naming_rules(
    logic: ModuleType, source: str, expected: str
) -> None:
    when = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    identifier = logic.rds_snapshot_identifier(source, when, max_length=255)
    assert identifier == expected
    assert RDS_IDENTIFIER.fullmatch(identifier)


def test_long_cluster_names_are_cut_to_63_characters_and_stay_distinct(
    logic: ModuleType,
) -> None:
    # GIVEN two 63-character cluster names that share their first 50 characters
    when = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    first, second = "c" * 50 + "-aaaaaaaaaaaa", "c" * 50 + "-bbbbbbbbbbbb"

    # WHEN each gets a cluster snapshot identifier
    names = [logic.rds_snapshot_identifier(n, when, max_length=63) for n in (first, second)]

    # THEN both fit the 63-character limit, follow the rules, keep the marker, and differ
    for name in names:
        assert len(name) == 63 and RDS_IDENTIFIER.fullmatch(name)
        assert name.startswith("c" * 30) and name.endswith("-opskit-20261128-020000")
    assert names[0] != names[1]


def test_a_63_character_cluster_gets_a_valid_snapshot_through_the_api(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    name = aws.name("reporting").ljust(63, "x")  # the longest cluster name RDS allows
    cluster(aws, name)

    result = backup.lambda_handler({"backup_type": "rds"}, lambda_context)

    [snapshot] = cluster_snapshot_names(aws, name)
    assert result["created"] == [snapshot]
    assert len(snapshot) <= 63 and "-opskit-" in snapshot and RDS_IDENTIFIER.fullmatch(snapshot)


# -- retention ----------------------------------------------------------------------------


def test_retention_deletes_only_this_environments_owned_snapshots_past_retention(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN an instance whose volume has owned snapshots 8 and 6 days old, one 30 days old
    # tagged Retention=permanent, one without the ownership tags and one another
    # environment owns
    _, [volume] = launch(aws)
    expired = ebs_snapshot(aws, volume, days_old=8, **owned(aws.env))
    kept = {
        ebs_snapshot(aws, volume, days_old=6, **owned(aws.env)),
        ebs_snapshot(aws, volume, days_old=30, **owned(aws.env, Retention="permanent")),
        ebs_snapshot(aws, volume, days_old=30, Environment=aws.env, CreatedBy="someone"),
        ebs_snapshot(aws, volume, days_old=30, **owned(aws.other)),
    }
    # AND the same cases for a DB instance's and a cluster's manual snapshots
    orders, ledger = aws.name("orders"), aws.name("ledger")
    database(aws, orders)
    cluster(aws, ledger)
    expired_db = db_snapshot(aws, orders, f"{orders}-opskit-old", days_old=8, **owned(aws.env))
    kept_db = {
        db_snapshot(aws, orders, f"{orders}-opskit-young", days_old=6, **owned(aws.env)),
        db_snapshot(
            aws,
            orders,
            f"{orders}-opskit-keep",
            days_old=30,
            **owned(aws.env, Retention="Permanent"),
        ),
        db_snapshot(aws, orders, f"{orders}-manual", days_old=30, Environment=aws.env),
        db_snapshot(aws, orders, f"{orders}-opskit-other", days_old=30, **owned(aws.other)),
        # owned by its tags, but not a name this function gives (nor its IAM allows)
        db_snapshot(aws, orders, f"{orders}-by-hand", days_old=30, **owned(aws.env)),
    }
    expired_cluster = cluster_snapshot(
        aws, ledger, f"{ledger}-opskit-old", days_old=8, **owned(aws.env)
    )
    kept_cluster = {
        cluster_snapshot(aws, ledger, f"{ledger}-opskit-young", days_old=6, **owned(aws.env)),
        cluster_snapshot(aws, ledger, f"{ledger}-manual", days_old=30),
    }

    # WHEN the run happens with the default retention of 7 days
    result = backup.lambda_handler({}, lambda_context)

    # THEN exactly the owned snapshots of this environment older than 7 days are gone
    assert sorted(result["deleted"]) == sorted([expired, expired_db, expired_cluster])
    assert set(snapshots(aws, volume)) == kept | {result["created"][0]}
    assert db_snapshot_names(aws, orders) == kept_db | {result["created"][1]}
    assert cluster_snapshot_names(aws, ledger) == kept_cluster | {result["created"][2]}
    assert result["failed"] == []
    # AND the permanent ones are named in the report
    [report] = aws.reports()
    assert f"{orders}-opskit-keep: tagged Retention=permanent" in report["Message"]
    assert f"{orders}-by-hand: not named like this function's snapshots" in report["Message"]


def test_expired_backups_an_ami_uses_or_a_lock_holds_are_kept_with_the_reason(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN expired owned snapshots: one an AMI of the account uses, one under a governance
    # lock, one whose lock has expired, and a plain one
    _, [volume] = launch(aws)
    image_id = aws.ec2.register_image(Name=f"restored-{aws.id}", RootDeviceName="/dev/sda1")[
        "ImageId"
    ]
    [image] = aws.ec2.describe_images(ImageIds=[image_id])["Images"]
    in_use = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]  # moto's own snapshot
    aws.ec2.create_tags(Resources=[in_use], Tags=tag_list(owned(aws.env, VolumeId=volume)))
    get_backend("ec2")[ACCOUNT][REGION].snapshots[in_use].start_time = _naive_utc(30)
    locked, unlocked, plain = (
        ebs_snapshot(aws, volume, days_old=30, **owned(aws.env)) for _ in range(3)
    )
    aws.locks.update({locked: "governance", unlocked: "expired"})

    # WHEN the run happens
    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    # THEN only the unprotected ones go; the others are kept, saying why, and nothing failed
    assert sorted(result["deleted"]) == sorted([unlocked, plain])
    remaining = aws.ec2.describe_snapshots(SnapshotIds=[in_use, locked])["Snapshots"]
    assert len(remaining) == 2
    assert result["failed"] == []
    [report] = aws.reports()
    assert f"{in_use}: kept, used by an AMI of the account" in report["Message"]
    assert f"{locked}: kept, under an EBS snapshot lock" in report["Message"]


def test_a_snapshot_ec2_refuses_as_in_use_is_kept_not_failed(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    """Fast snapshot restore, or an AMI registered since the listing: EC2 answers InUse."""
    _, [volume] = launch(aws)
    busy = ebs_snapshot(aws, volume, days_old=30, **owned(aws.env))
    fail_calls(
        backup,
        "ec2",
        "DeleteSnapshot",
        when=lambda params: params["SnapshotId"] == busy,
        code="InvalidSnapshot.InUse",
        message=f"The snapshot {busy} is currently in use by ami-0123456789abcdef0",
    )

    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    assert result["failed"] == [] and result["deleted"] == []
    [report] = aws.reports()
    assert (
        f"{busy}: kept, InvalidSnapshot.InUse: The snapshot {busy} is currently in use"
        in (report["Message"])
    )


def test_a_volume_attached_to_two_tagged_instances_is_snapshotted_once(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    """EBS Multi-Attach: EC2 refuses a second snapshot of one volume within 15 seconds."""
    first, _ = launch(aws)
    second, _ = launch(aws)
    shared = aws.ec2.create_volume(
        AvailabilityZone=f"{REGION}a", Size=8, VolumeType="io2", Iops=100, MultiAttachEnabled=True
    )["VolumeId"]
    for instance, device in ((first, "/dev/sdf"), (second, "/dev/sdg")):
        aws.ec2.attach_volume(VolumeId=shared, InstanceId=instance, Device=device)

    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    assert len(snapshots(aws, shared)) == 1
    assert result["failed"] == []
    [report] = aws.reports()
    assert f"{second} /dev/sdg: {shared} already snapshotted with {first}" in report["Message"]


def test_rds_retention_runs_first_so_a_full_snapshot_quota_makes_room_for_tonights(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tagged DB whose expired backups fill the Region's manual snapshot quota
    orders = aws.name("orders")
    database(aws, orders)
    old = [
        db_snapshot(aws, orders, f"{orders}-opskit-{age}d", days_old=age, **owned(aws.env))
        for age in (8, 9, 10)
    ]
    monkeypatch.setenv("MOTO_RDS_SNAPSHOT_LIMIT", str(len(old)))  # read by moto on each call

    # WHEN the nightly run happens
    result = backup.lambda_handler({"backup_type": "rds"}, lambda_context)

    # THEN the expired ones went first (but the newest, as nothing younger exists yet)
    assert sorted(result["deleted"]) == sorted(old[1:])
    # AND tonight's snapshot found room: nothing failed
    assert result["failed"] == []
    [tonight] = result["created"]
    assert db_snapshot_names(aws, orders) == {old[0], tonight}


def test_a_database_still_backed_up_keeps_its_newest_snapshot_even_past_retention(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN a tagged DB whose backups have failed for longer than the retention, and a DB
    # no longer tagged for backup, each with owned snapshots all past retention
    failing, retired = aws.name("failing"), aws.name("retired")
    database(aws, failing)
    database(aws, retired, backup=False)
    last_good = db_snapshot(aws, failing, f"{failing}-opskit-a", days_old=9, **owned(aws.env))
    older = db_snapshot(aws, failing, f"{failing}-opskit-b", days_old=10, **owned(aws.env))
    # AND a younger snapshot of the failing DB that someone else took (named like ours)
    theirs = db_snapshot(aws, failing, f"{failing}-opskit-by-hand", days_old=1)
    retired_snapshots = {
        db_snapshot(aws, retired, f"{retired}-opskit-{age}", days_old=age, **owned(aws.env))
        for age in (9, 10)
    }
    fail_calls(backup, "rds", "CreateDBSnapshot")

    # WHEN the run happens and tonight's snapshot fails again
    result = backup.lambda_handler({"backup_type": "rds"}, lambda_context)

    # THEN the failing DB keeps its last good snapshot; everything else past retention went
    assert result["failed"] == [{"resource": failing, "error": INJECTED}]
    assert sorted(result["deleted"]) == sorted([older, *retired_snapshots])
    assert db_snapshot_names(aws, failing) == {last_good, theirs}, "theirs is not our copy"
    assert db_snapshot_names(aws, retired) == set()
    [report] = aws.reports()
    assert (
        f"{last_good}: kept, the newest snapshot of {failing}, which has none younger"
        in (report["Message"])
    )


@pytest.mark.parametrize("code", ["SnapshotLimitExceeded", "SnapshotQuotaExceeded"])
def test_a_volume_refused_for_a_snapshot_quota_keeps_no_expired_snapshots(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, code: str
) -> None:
    # GIVEN a volume with an expired owned snapshot, and EC2 refusing new ones: quota reached
    _, [volume] = launch(aws)
    expired = ebs_snapshot(aws, volume, days_old=10, **owned(aws.env))
    fail_calls(backup, "ec2", "CreateSnapshot", code=code, message="quota reached")

    # WHEN the run happens
    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    # THEN the failure is reported, and the expired snapshot still goes, freeing the quota
    assert result["failed"] == [{"resource": volume, "error": f"{code}: quota reached"}]
    assert result["deleted"] == [expired]
    assert snapshots(aws, volume) == {}


def test_when_todays_backup_of_a_volume_fails_its_older_backups_are_kept(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN two instances with expired owned snapshots, and snapshot creation failing for one
    _, [broken] = launch(aws)
    _, [healthy] = launch(aws)
    last_good = ebs_snapshot(aws, broken, days_old=10, **owned(aws.env))
    expired = ebs_snapshot(aws, healthy, days_old=10, **owned(aws.env))
    fail_calls(backup, "ec2", "CreateSnapshot", when=lambda params: params["VolumeId"] == broken)

    # WHEN the run happens
    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    # THEN the failing volume keeps its last backup; the healthy one's old one is replaced
    assert result["failed"] == [{"resource": broken, "error": INJECTED}]
    assert result["deleted"] == [expired]
    assert set(snapshots(aws, broken)) == {last_good}


# -- dry run ------------------------------------------------------------------------------


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN a tagged instance with an expired owned snapshot, a tagged DB with one, a cluster
    _, [volume] = launch(aws)
    expired = ebs_snapshot(aws, volume, days_old=9, **owned(aws.env))
    orders, ledger = aws.name("orders"), aws.name("ledger")
    database(aws, orders)
    cluster(aws, ledger)
    expired_db = db_snapshot(aws, orders, f"{orders}-opskit-old", days_old=9, **owned(aws.env))
    young_db = db_snapshot(aws, orders, f"{orders}-opskit-new", days_old=1, **owned(aws.env))

    # WHEN a dry run happens
    result = backup.lambda_handler({"dry_run": True}, lambda_context)

    # THEN nothing was created or deleted
    assert set(snapshots(aws, volume)) == {expired}
    assert db_snapshot_names(aws, orders) == {expired_db, young_db}
    assert cluster_snapshot_names(aws, ledger) == set()
    # AND the result lists what a real run would create (the volume; RDS identifiers) and delete
    assert result["dry_run"] is True
    assert result["created"][0] == volume
    assert [n.split("-opskit-")[0] for n in result["created"][1:]] == [orders, ledger]
    assert sorted(result["deleted"]) == sorted([expired, expired_db])
    [report] = aws.reports()
    assert (
        report["Subject"]
        == f"[dry run] opskit backup {aws.env}: 3 would create, 2 would delete, 0 failed"
    )
    assert "DRY RUN: nothing was changed" in report["Message"]


# -- failures -----------------------------------------------------------------------------


def test_a_failing_resource_is_reported_and_counted_while_the_others_proceed(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN three tagged instances and a DB, and AWS refusing to snapshot one volume and the DB
    volumes = [launch(aws)[1][0] for _ in range(3)]
    orders = aws.name("orders")
    database(aws, orders)
    fail_calls(
        backup, "ec2", "CreateSnapshot", when=lambda params: params["VolumeId"] == volumes[1]
    )
    fail_calls(backup, "rds", "CreateDBSnapshot")

    # WHEN the run happens
    result = backup.lambda_handler({}, lambda_context)

    # THEN the handler returns normally (no async retry) and the others were snapshotted
    assert sorted(s["VolumeId"] for s in snapshots(aws, *volumes).values()) == sorted(
        [volumes[0], volumes[2]]
    )
    assert result["failed"] == [
        {"resource": volumes[1], "error": INJECTED},
        {"resource": orders, "error": INJECTED},
    ]
    # AND the failures are counted in FailedResources, with the environment as a dimension
    [document] = emitted_metrics(capsys)
    assert document["FailedResources"] == [2.0] and document["SnapshotsCreated"] == [2.0]
    assert (document["environment"], document["service"]) == (aws.env, "backup")
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "opskit"
    # AND reported, flagged in the subject and the message attributes
    [report] = aws.reports()
    assert report["Subject"] == f"FAILED opskit backup {aws.env}: 2 created, 0 deleted, 2 failed"
    assert f"{volumes[1]}: {INJECTED}" in report["Message"]
    assert report["MessageAttributes"]["outcome"]["Value"] == "failed"


def test_a_failure_that_is_a_bug_is_logged_with_its_traceback_and_an_aws_refusal_without(
    logic: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a run
    request = logic.Request(backup_type="all", environment="dev", dry_run=False)
    run = logic.Run(request=request, now=datetime(2026, 11, 28, 2, tzinfo=UTC), retention_days=7)
    refusal = ClientError(
        {"Error": {"Code": "IncorrectState", "Message": "busy"}}, "CreateSnapshot"
    )
    bug = KeyError("VolumeId")

    # WHEN AWS refuses one resource and the code fails on another
    run.fail("vol-aws", refusal)
    run.fail("vol-bug", bug)

    # THEN only the bug's warning carries a traceback
    warnings = {vars(r)["resource"]: r for r in caplog.records if hasattr(r, "resource")}
    assert warnings["vol-aws"].exc_info is None
    assert warnings["vol-bug"].exc_info is not None and warnings["vol-bug"].exc_info[1] is bug


def test_an_event_for_another_environment_is_refused_before_anything_is_touched(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN tagged instances with expired owned snapshots in this and another environment
    _, [mine] = launch(aws)
    _, [theirs] = launch(aws, environment=aws.other)
    kept = {
        ebs_snapshot(aws, mine, days_old=30, **owned(aws.env)),
        ebs_snapshot(aws, theirs, days_old=30, **owned(aws.other)),
    }

    # WHEN the function is asked to back up the other environment THEN it refuses, by name
    with pytest.raises(backup.RefusedEnvironmentError) as refused:
        backup.lambda_handler({"environment": f" {aws.other}"}, lambda_context)
    assert str(refused.value) == (
        f"refusing a backup of environment {aws.other!r}: this function backs up "
        f"{aws.env!r} only (its ENVIRONMENT); nothing was touched"
    )

    # AND nothing was created, deleted, reported or counted
    assert set(snapshots(aws, mine, theirs)) == kept
    assert aws.reports() == [] and emitted_metrics(capsys) == []


def test_its_own_environment_named_in_the_event_is_accepted(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    """The schedule names it: {"backup_type": "all", "environment": "<env>", "dry_run": false}."""
    _, volumes = launch(aws)

    result = backup.lambda_handler(
        {"backup_type": "all", "environment": aws.env, "dry_run": False}, lambda_context
    )

    assert result["environment"] == aws.env
    assert [s["VolumeId"] for s in snapshots(aws, *volumes).values()] == volumes


def test_ec2_and_rds_retry_adaptively_within_the_time_kept_free_before_the_timeout(
    backup: ModuleType,
) -> None:
    # GIVEN the handler's EC2, RDS and (for the report) SNS clients
    configs = [backup.aws_client(name).meta.config for name in ("ec2", "rds")]
    report_client = clients.client("sns").meta.config

    # THEN EC2 and RDS retry adaptively, a few times
    for config in configs:
        assert (config.retries["mode"], config.retries["total_max_attempts"]) == ("adaptive", 3)
    # AND the margin covers the longest one of their calls can take, then the report
    longest = max(
        clients.longest_call_seconds(
            retry_mode=c.retries["mode"], max_attempts=c.retries["total_max_attempts"] - 1
        )
        for c in configs
    ) + clients.longest_call_seconds(
        retry_mode=report_client.retries["mode"],
        max_attempts=report_client.retries["total_max_attempts"] - 1,
    )
    assert longest <= backup.DEADLINE_MARGIN_SECONDS
    # AND a function with the construct's minimum of 5 minutes keeps all of it free
    deadline = backup._deadline(LambdaContext(remaining_seconds=300))
    assert deadline.remaining() == pytest.approx(300 - backup.DEADLINE_MARGIN_SECONDS, abs=1)


def test_a_listing_that_fails_is_reported_and_the_rest_still_runs(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN EC2 refusing to list instances, and a tagged DB
    fail_calls(backup, "ec2", "DescribeInstances")
    orders = aws.name("orders")
    database(aws, orders)

    # WHEN the run happens
    result = backup.lambda_handler({}, lambda_context)

    # THEN the DB was still backed up and the listing failure is reported, not raised
    assert db_snapshot_names(aws, orders) == set(result["created"]) != set()
    assert result["failed"] == [{"resource": "ec2:DescribeInstances", "error": INJECTED}]


def test_when_nothing_can_be_listed_the_run_raises_so_a_retry_can_do_it(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    # GIVEN EC2 refusing every listing an EC2 run needs
    fail_calls(backup, "ec2", "DescribeInstances")
    fail_calls(backup, "ec2", "DescribeSnapshots")

    # WHEN an EC2 run happens THEN it raises, naming both failures, and reports nothing
    with pytest.raises(
        backup.NothingDoneError, match=r"ec2:DescribeInstances.*ec2:DescribeSnapshots"
    ):
        backup.lambda_handler({"backup_type": "ec2"}, lambda_context)
    assert aws.reports() == []


def test_a_report_that_cannot_be_published_is_a_failure_not_an_error(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch(aws)
    monkeypatch.setenv("SNS_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:missing-{aws.id}")

    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    assert len(result["created"]) == 1
    [failure] = result["failed"]
    assert failure["resource"] == "sns:Publish" and failure["error"].startswith("NotFound")


def test_work_left_when_the_time_budget_is_used_up_is_reported_as_not_attempted(
    aws: Aws, backup: ModuleType
) -> None:
    # GIVEN two tagged instances and a deadline already reached
    volumes = [launch(aws)[1][0] for _ in range(2)]
    request = backup.Request(backup_type="ec2", environment=aws.env, dry_run=False)

    # WHEN the run starts
    run = backup.run_backup(
        request,
        ec2=backup.aws_client("ec2"),
        rds=None,
        now=datetime.now(UTC),
        retention_days=7,
        deadline=Deadline(0),
    )

    # THEN nothing was created and both volumes are reported for the next run
    assert snapshots(aws, *volumes) == {} and run.created == []
    assert [f["resource"] for f in run.failed] == volumes
    assert all("time budget" in f["error"] for f in run.failed)


# -- reports, events, pagination, smoke test ----------------------------------------------


def test_the_report_fits_sns_limits_and_summarises_long_lists(logic: ModuleType) -> None:
    # GIVEN a run with thousands of entries and an environment name far too long for a subject
    request = logic.Request(backup_type="all", environment="e" * 300, dry_run=False)
    run = logic.Run(request=request, now=datetime(2026, 11, 28, 2, tzinfo=UTC), retention_days=7)
    run.created = [f"snap-{i:017x}" for i in range(4000)]
    run.deleted = [f"snap-{i:017x}" for i in range(4000, 6000)]
    for i in range(3000):
        run.fail(f"vol-{i:017x}", "IncorrectState: " + "x" * 200)

    # WHEN the report is written
    subject, body = logic.report(run)

    # THEN each list shows its first 100 entries and a count of the rest
    assert "... and 3900 more" in body and "... and 1900 more" in body
    assert "... and 2900 more" in body
    # AND the subject and body, as `publish` sends them, respect SNS's limits
    assert len(sns_subject(subject)) <= MAX_SUBJECT_CHARS
    assert len(fit_message(body).encode()) < MAX_MESSAGE_BYTES


def test_the_published_report_names_what_was_done(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    launch(aws)

    result = backup.lambda_handler({"backup_type": "ec2"}, lambda_context)

    [report] = aws.reports()
    assert report["Subject"] == f"opskit backup {aws.env}: 1 created, 0 deleted, 0 failed"
    assert report["MessageAttributes"]["outcome"]["Value"] == "succeeded"
    assert json.loads(report["Message"].split("Result:\n", 1)[1]) == result


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"dryRun": True},
            "unknown field 'dryRun'; valid fields: backup_type, environment, dry_run",
        ),
        (
            {"backup_type": "s3"},
            "'backup_type' has invalid value 's3'; valid choices: all, ec2, rds",
        ),
        ({"dry_run": "yes"}, "'dry_run' must be true or false"),
        ({"environment": " "}, "'environment' must be a non-empty string"),
        ([], "event must be a JSON object"),
    ],
)
def test_a_malformed_event_is_refused_before_anything_is_touched(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, event: Any, message: str
) -> None:
    _, volumes = launch(aws)
    with pytest.raises(MalformedEventError, match=re.escape(message)):
        backup.lambda_handler(event, lambda_context)
    assert snapshots(aws, *volumes) == {} and aws.reports() == []


def test_every_page_of_snapshots_is_considered(logic: ModuleType, aws_environment: str) -> None:
    # GIVEN DescribeSnapshots answering in two pages, one expired owned snapshot on each
    ec2 = boto3.client("ec2", region_name=REGION)
    now = datetime(2026, 11, 28, 2, tzinfo=UTC)
    filters = [
        {"Name": "tag:Environment", "Values": ["dev"]},
        {"Name": "tag:AutomatedBackup", "Values": ["true"]},
        {"Name": "tag:CreatedBy", "Values": ["opskit-backup"]},
    ]

    def snapshot(snapshot_id: str) -> dict[str, Any]:
        return {
            "SnapshotId": snapshot_id,
            "VolumeId": "vol-1",
            "State": "completed",
            "StartTime": now - timedelta(days=30),
            "Tags": tag_list(owned("dev")),
        }

    run = logic.Run(
        request=logic.Request(backup_type="ec2", environment="dev", dry_run=False),
        now=now,
        retention_days=7,
    )
    with Stubber(ec2) as stub:
        stub.add_response(
            "describe_snapshots",
            {"Snapshots": [snapshot("snap-1")], "NextToken": "page-2"},
            {"OwnerIds": ["self"], "Filters": filters},
        )
        stub.add_response(
            "describe_snapshots",
            {"Snapshots": [snapshot("snap-2")]},
            {"OwnerIds": ["self"], "Filters": filters, "NextToken": "page-2"},
        )
        stub.add_response(
            "describe_images",
            {"Images": []},
            {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000},
        )
        stub.add_response(
            "describe_locked_snapshots",
            {"Snapshots": []},
            {
                "Filters": [
                    {
                        "Name": "lock-state",
                        "Values": ["compliance-cooloff", "governance", "compliance"],
                    }
                ],
                "MaxResults": 1000,
            },
        )
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-1"})
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-2"})

        # WHEN retention runs
        logic.expire_ebs_snapshots(ec2, run, Deadline(60))

        # THEN both pages were read, what EC2 protects was asked once, and both are deleted
        stub.assert_no_pending_responses()
    assert run.deleted == ["snap-1", "snap-2"] and run.failed == []


def test_the_post_deployment_smoke_test_lists_everything_and_changes_nothing(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    _, volumes = launch(aws)
    orders = aws.name("orders")
    database(aws, orders)

    result = backup.lambda_handler({"opskit": {"smokeTest": True}}, lambda_context)

    assert result["smokeTest"] == "passed" and result["dry_run"] is True
    assert volumes[0] in result["created"]
    assert snapshots(aws, *volumes) == {} and db_snapshot_names(aws, orders) == set()
    assert aws.reports() == [] and emitted_metrics(capsys) == []


def test_the_smoke_test_fails_when_a_listing_fails(
    aws: Aws, backup: ModuleType, lambda_context: LambdaContext
) -> None:
    fail_calls(backup, "rds", "DescribeDBClusters")
    with pytest.raises(backup.NothingDoneError, match="rds:DescribeDBClusters"):
        backup.lambda_handler({"opskit": {"smokeTest": True}}, lambda_context)
