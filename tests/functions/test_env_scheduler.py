"""Specification of the environment scheduler (opskit/functions/env_scheduler/app.py).

The handler runs in-process against moto's ThreadedMotoServer over HTTP: EC2 instances,
Auto Scaling groups (which launch their own instances in moto), CloudWatch metric data and
an SNS topic whose messages land in an SQS queue the tests read. Every test works in an
environment of its own name, so the shared server's other resources never match its tags.
moto paginates DescribeInstances by reservation rather than by instance; the paging test
launches one instance per reservation so the two agree. moto starts an instance at once and
never fails a start later; the tests of scale_up's watch set an instance's state (pending,
stopped with a StateReason) on moto's backend objects, which live in this process, from a
botocore `after-call` hook on the handler's own client, and replace its sleep and clock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.backends import get_backend
from opskit_common import clients
from opskit_common.config import ConfigurationError
from opskit_common.events import MalformedEventError

from tests.functions.conftest import REGION, LambdaContext, load_handler
from tests.functions.stand_ins import Sleeps

AMI = "ami-12c6146b"
ACCOUNT = "123456789012"


@dataclass
class Account:
    """Test-side clients and helpers, independent of the code under test."""

    endpoint: str
    ec2: Any
    autoscaling: Any
    cloudwatch: Any
    subnet_id: str
    template_name: str
    calls: list[str] = field(default_factory=list)

    def launch(
        self,
        environment: str,
        *,
        autoscale: str | None = "true",
        name: str | None = None,
        spot: bool = False,
        stop_protected: bool = False,
    ) -> str:
        tags = {"Environment": environment}
        if autoscale is not None:
            tags["AutoScale"] = autoscale
        if name is not None:
            tags["Name"] = name
        options: dict[str, Any] = {}
        if spot:
            options["InstanceMarketOptions"] = {"MarketType": "spot"}
        if stop_protected:
            options["DisableApiStop"] = True
        response = self.ec2.run_instances(
            ImageId=AMI,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            SubnetId=self.subnet_id,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
            **options,
        )
        return str(response["Instances"][0]["InstanceId"])

    def states(self, *instance_ids: str) -> list[str]:
        """Each instance's state, in the order asked (one request)."""
        reservations = self.ec2.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        found = {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}
        return [found[i] for i in instance_ids]

    def group(
        self,
        environment: str,
        *,
        minimum: int,
        maximum: int,
        desired: int,
        tags: dict[str, str] | None = None,
        protected: bool = False,
    ) -> str:
        name = f"asg-{uuid.uuid4().hex[:10]}"
        all_tags = {"Environment": environment, "AutoScale": "true", **(tags or {})}
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=minimum,
            MaxSize=maximum,
            DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateName": self.template_name},
            VPCZoneIdentifier=self.subnet_id,
            NewInstancesProtectedFromScaleIn=protected,
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in all_tags.items()],
        )
        return name

    def groups(self, *names: str) -> list[Group]:
        """Each group as it is now, in the order asked (one request)."""
        found = {
            g["AutoScalingGroupName"]: Group(
                capacity=(g["MinSize"], g["MaxSize"], g["DesiredCapacity"]),
                tags={t["Key"]: t["Value"] for t in g["Tags"]},
                instances=[i["InstanceId"] for i in g["Instances"]],
            )
            for g in self.autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=list(names)
            )["AutoScalingGroups"]
        }
        return [found[name] for name in names]

    def group_view(self, name: str) -> Group:
        return self.groups(name)[0]

    def tag_group(self, name: str, key: str, value: str) -> None:
        self.autoscaling.create_or_update_tags(
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": True,
                }
            ]
        )

    def cpu(self, *samples: tuple[str, timedelta, float]) -> None:
        """CPUUtilization samples (instance, how long ago, percent), in one request."""
        now = datetime.now(UTC)
        self.cloudwatch.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                    "Timestamp": now - ago,
                    "Value": value,
                    "Unit": "Percent",
                }
                for instance_id, ago, value in samples
            ],
        )

    def count_calls(self, handler_client: Any) -> None:
        """Records the operation of every request a handler-side client sends."""
        handler_client.meta.events.register(
            "before-call.*.*", lambda model, **_: self.calls.append(model.name)
        )


@dataclass(frozen=True)
class Group:
    capacity: tuple[int, int, int]
    tags: dict[str, str]
    instances: list[str]


@dataclass
class Inbox:
    """The module's reports topic, read through a subscribed queue."""

    topic_arn: str
    queue_url: str
    sqs: Any

    def messages(self, environment: str) -> list[dict[str, str]]:
        """The SNS envelopes naming ``environment`` in their subject; the queue is emptied."""
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        for message in received:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        envelopes = [json.loads(m["Body"]) for m in received]
        return [e for e in envelopes if f" {environment}" in e["Subject"]]


@pytest.fixture(scope="module")
def network(moto_endpoint: str) -> Iterator[tuple[str, str]]:
    """One subnet and launch template for the module (moto state outlives a test).

    Without moto's default AMIs, its EC2 backend starts a second faster; run_instances does
    not check the image exists.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        yield _network(moto_endpoint)


def _network(endpoint: str) -> tuple[str, str]:
    kwargs = _client_kwargs(endpoint)
    ec2 = boto3.client("ec2", **kwargs)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/20")["Subnet"]["SubnetId"]
    template = f"scheduler-{uuid.uuid4().hex[:8]}"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"},
    )
    return subnet, template


def _client_kwargs(endpoint: str) -> dict[str, Any]:
    return {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


@pytest.fixture
def account(aws_environment: str, network: tuple[str, str]) -> Account:
    kwargs = _client_kwargs(aws_environment)
    return Account(
        endpoint=aws_environment,
        ec2=boto3.client("ec2", **kwargs),
        autoscaling=boto3.client("autoscaling", **kwargs),
        cloudwatch=boto3.client("cloudwatch", **kwargs),
        subnet_id=network[0],
        template_name=network[1],
    )


@pytest.fixture(scope="module")
def reports_topic(moto_endpoint: str) -> Inbox:
    kwargs = _client_kwargs(moto_endpoint)
    sns, sqs = boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs)
    suffix = uuid.uuid4().hex[:8]
    topic_arn = sns.create_topic(Name=f"reports-{suffix}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"reports-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Inbox(topic_arn, queue_url, sqs)


@pytest.fixture
def inbox(aws_environment: str, reports_topic: Inbox, monkeypatch: pytest.MonkeyPatch) -> Inbox:
    """SNS_TOPIC_ARN points at the module's reports topic."""
    monkeypatch.setenv("SNS_TOPIC_ARN", reports_topic.topic_arn)
    return reports_topic


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, inbox: Inbox) -> str:
    """A fresh environment name, allowed to scale."""
    name = f"dev-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ALLOWED_ENVIRONMENTS", f"staging-elsewhere, {name}")
    return name


@pytest.fixture
def other_environment() -> str:
    return f"prod-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def handler() -> ModuleType:
    return load_handler("env_scheduler")


Runner = Callable[..., dict[str, Any]]


@pytest.fixture
def run(handler: ModuleType, lambda_context: LambdaContext) -> Runner:
    def invoke(action: str, environment: str, **extra: Any) -> dict[str, Any]:
        return dict(
            handler.lambda_handler(
                {"action": action, "environment": environment, **extra}, lambda_context
            )
        )

    return invoke


def emitted_metrics(output: str) -> list[dict[str, Any]]:
    """The EMF documents Powertools printed."""
    documents = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


# --- scale_down: what is selected ----------------------------------------------------

SAVED = "opskit:saved-capacity"


def test_given_tagged_instances_when_scaled_down_then_only_running_autoscale_true_ones_stop(
    account: Account, run: Runner, environment: str, other_environment: str
) -> None:
    opted_in = [account.launch(environment), account.launch(environment)]
    untouched = [
        account.launch(environment, autoscale=None),
        account.launch(environment, autoscale="false"),
        account.launch(environment, autoscale="True"),
        account.launch(other_environment),
    ]

    result = run("scale_down", environment)

    assert sorted(result["instances"]) == sorted(opted_in)
    assert account.states(*opted_in, *untouched) == ["stopped"] * 2 + ["running"] * 4
    assert result["failed"] == [] and result["dry_run"] is False


def test_given_groups_when_scaled_down_then_capacity_is_saved_and_min_max_and_desired_are_0(
    account: Account, run: Runner, environment: str, other_environment: str
) -> None:
    web = account.group(environment, minimum=1, maximum=4, desired=2)
    elsewhere = account.group(other_environment, minimum=1, maximum=3, desired=1)

    result = run("scale_down", environment)

    assert result["groups"] == [{"name": web, "min": 1, "max": 4, "desired": 2}]
    scaled, untouched = account.groups(web, elsewhere)
    assert scaled.capacity == (0, 0, 0), "max too: no scaling policy may launch overnight"
    assert scaled.tags[SAVED] == "min=1 max=4 desired=2"
    [saved] = [
        tag
        for tag in account.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[web])[
            "AutoScalingGroups"
        ][0]["Tags"]
        if tag["Key"] == SAVED
    ]
    assert saved["PropagateAtLaunch"] is False, "instances the group launches must not carry it"
    assert scaled.instances == []
    assert untouched.capacity == (1, 3, 1) and SAVED not in untouched.tags


def test_given_spot_and_stop_protected_instances_when_scaled_down_then_the_rest_still_stop(
    account: Account,
    run: Runner,
    environment: str,
    inbox: Inbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spot = account.launch(environment, spot=True)
    protected = account.launch(environment, stop_protected=True)
    plain = [account.launch(environment) for _ in range(3)]
    capsys.readouterr()

    result = run("scale_down", environment)

    assert sorted(result["instances"]) == sorted(plain), "a protected one costs only itself"
    assert account.states(*plain, protected, spot) == ["stopped"] * 3 + ["running"] * 2
    [failure] = result["failed"]
    assert failure["resource"] == protected
    assert failure["error"].startswith("OperationNotPermitted: ")
    assert result["skipped"] == [
        {
            "resource": spot,
            "reason": "Spot Instance: one-time requests cannot be stopped; "
            "use an Auto Scaling group",
        }
    ]
    [document] = emitted_metrics(capsys.readouterr().out)
    assert document["FailedResources"] == [1.0]
    assert document["environment"] == environment
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "opskit"
    [message] = inbox.messages(environment)
    assert message["Subject"] == f"opskit {environment} scale_down: 1 resources failed"
    assert f"{protected}: OperationNotPermitted" in message["Message"]


def test_given_one_instance_whose_stop_is_refused_then_it_is_reported_failed_after_one_call(
    account: Account, run: Runner, environment: str
) -> None:
    protected = account.launch(environment, stop_protected=True)
    calls: list[str] = []
    clients.client("ec2").meta.events.register(
        "before-call.ec2.StopInstances",
        lambda params, **_: calls.append(params["body"]["InstanceId.1"]),
    )

    result = run("scale_down", environment)

    assert (result["instances"], [f["resource"] for f in result["failed"]]) == ([], [protected])
    assert calls == [protected], "a batch of one is not asked again alone"


def test_given_a_running_member_of_an_opted_out_group_then_it_is_never_stopped_alone(
    account: Account, run: Runner, environment: str
) -> None:
    """A group's instances carry its tags (AutoScale=true here) and aws:autoscaling:groupName;
    stopping one would only make the group replace it."""
    group = account.group(environment, minimum=1, maximum=1, desired=1)
    [member] = account.group_view(group).instances
    account.tag_group(group, "AutoScale", "false")

    result = run("scale_down", environment)

    assert result["skipped"] == [
        {"resource": group, "reason": "opted out (AutoScale=false)"},
        {
            "resource": member,
            "reason": f"in Auto Scaling group {group}, which would replace it; "
            "scaled with its group",
        },
    ]
    assert account.states(member) == ["running"]
    assert account.group_view(group).capacity == (1, 1, 1)


def test_given_instances_protected_from_scale_in_when_scaled_down_then_a_warning_says_so(
    account: Account, run: Runner, environment: str
) -> None:
    group = account.group(environment, minimum=1, maximum=2, desired=2, protected=True)

    result = run("scale_down", environment)

    assert result["warnings"] == [
        {"resource": group, "warning": "2 instance(s) protected from scale-in keep running"}
    ]


# --- round trip and idempotency ------------------------------------------------------


def test_given_groups_and_instances_when_scaled_down_then_up_then_the_exact_capacities_return(
    account: Account, run: Runner, environment: str, inbox: Inbox
) -> None:
    capacities = {
        account.group(environment, minimum=1, maximum=5, desired=3): (1, 5, 3),
        account.group(environment, minimum=0, maximum=2, desired=1): (0, 2, 1),
        account.group(environment, minimum=2, maximum=2, desired=2): (2, 2, 2),
    }
    names = list(capacities)
    standalone = [account.launch(environment), account.launch(environment)]

    run("scale_down", environment)
    assert [g.capacity[::2] for g in account.groups(*names)] == [(0, 0)] * 3
    result = run("scale_up", environment)

    restored = account.groups(*names)
    assert [g.capacity for g in restored] == list(capacities.values())
    assert [SAVED in g.tags for g in restored] == [False] * 3
    assert [len(g.instances) for g in restored] == [3, 1, 2]
    assert account.states(*standalone) == ["running", "running"]
    assert sorted(result["instances"]) == sorted(standalone)
    assert sorted(g["name"] for g in result["groups"]) == sorted(names)
    assert inbox.messages(environment) == [], "nothing failed, so nothing to read"


def test_given_a_scaled_down_environment_when_scaled_down_again_then_nothing_more_changes(
    account: Account, run: Runner, environment: str
) -> None:
    group = account.group(environment, minimum=1, maximum=4, desired=2)
    instance = account.launch(environment)
    run("scale_down", environment)

    again = run("scale_down", environment)

    assert (again["instances"], again["groups"], again["failed"]) == ([], [], [])
    assert again["skipped"] == [
        {"resource": group, "reason": "already scaled down (min=1 max=4 desired=2 saved)"}
    ]
    assert account.group_view(group).tags[SAVED] == "min=1 max=4 desired=2"
    assert account.states(instance) == ["stopped"]
    run("scale_up", environment)
    assert account.group_view(group).capacity == (1, 4, 2), "the zeros were never saved"


def test_given_a_scaled_up_environment_when_scaled_up_again_then_nothing_more_changes(
    account: Account, run: Runner, environment: str
) -> None:
    group = account.group(environment, minimum=1, maximum=3, desired=2)
    instance = account.launch(environment)
    run("scale_down", environment)
    run("scale_up", environment)
    account.autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=3)

    again = run("scale_up", environment)

    assert (again["instances"], again["groups"], again["failed"]) == ([], [], [])
    assert account.group_view(group).capacity == (1, 3, 3), "a day-time change is not undone"
    assert account.states(instance) == ["running"]


def test_given_a_group_scaled_up_by_hand_overnight_when_scaled_down_again_the_saved_one_stays(
    account: Account, run: Runner, environment: str
) -> None:
    group = account.group(environment, minimum=2, maximum=6, desired=4)
    run("scale_down", environment)
    account.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=group, MinSize=1, MaxSize=2, DesiredCapacity=1
    )

    result = run("scale_down", environment)

    assert account.group_view(group).capacity == (0, 0, 0)
    assert result["warnings"] == [
        {
            "resource": group,
            "warning": "scaled up by hand since it was scaled down; "
            "keeping the saved min=2 max=6 desired=4",
        }
    ]
    run("scale_up", environment)
    assert account.group_view(group).capacity == (2, 6, 4)


def test_given_an_unreadable_saved_capacity_then_that_group_fails_untouched_and_the_rest_proceed(
    account: Account, run: Runner, environment: str
) -> None:
    broken = account.group(environment, minimum=0, maximum=2, desired=0)
    account.tag_group(broken, SAVED, "two please")
    healthy = account.group(environment, minimum=1, maximum=2, desired=1)
    run("scale_down", environment)

    result = run("scale_up", environment)

    assert result["failed"] == [
        {
            "resource": broken,
            "error": f"tag {SAVED}='two please' is not 'min=<n> max=<n> desired=<n>'",
        }
    ]
    after_broken, after_healthy = account.groups(broken, healthy)
    assert after_broken.capacity == (0, 2, 0) and after_broken.tags[SAVED] == "two please"
    assert after_healthy.capacity == (1, 2, 1)


def test_given_a_group_already_at_zero_when_scaled_down_then_no_capacity_is_saved(
    account: Account, run: Runner, environment: str
) -> None:
    idle = account.group(environment, minimum=0, maximum=3, desired=0)

    result = run("scale_down", environment)

    assert result["skipped"] == [
        {"resource": idle, "reason": "already at zero capacity; nothing to save"}
    ]
    assert SAVED not in account.group_view(idle).tags


# --- refusal and dry run --------------------------------------------------------------


@pytest.mark.parametrize("action", ["scale_down", "scale_up"])
def test_given_an_environment_not_allowed_when_asked_to_scale_then_it_is_refused_untouched(
    account: Account,
    run: Runner,
    handler: ModuleType,
    environment: str,
    other_environment: str,
    action: str,
) -> None:
    group = account.group(other_environment, minimum=1, maximum=2, desired=1)
    instance = account.launch(other_environment)
    if action == "scale_up":
        account.ec2.stop_instances(InstanceIds=[instance])

    with pytest.raises(handler.RefusedEnvironmentError) as refused:
        run(action, other_environment)

    assert str(refused.value) == (
        f"refusing {action} of environment {other_environment!r}: it is not in "
        f"ALLOWED_ENVIRONMENTS (staging-elsewhere, {environment}); nothing was touched"
    )
    after = account.group_view(group)
    assert after.capacity == (1, 2, 1) and SAVED not in after.tags
    assert account.states(instance) == ["running" if action == "scale_down" else "stopped"]


def test_given_no_allowed_environments_then_scaling_is_refused_before_any_aws_call(
    run: Runner, handler: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on the discard port: any AWS call would fail with a connection error."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("ALLOWED_ENVIRONMENTS", raising=False)
    monkeypatch.delenv("SNS_TOPIC_ARN", raising=False)

    with pytest.raises(handler.RefusedEnvironmentError, match=r"ALLOWED_ENVIRONMENTS \(none\)"):
        run("scale_down", "prod")


def test_given_a_dry_run_then_nothing_changes_and_the_result_says_what_would(
    account: Account,
    run: Runner,
    environment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = account.group(environment, minimum=1, maximum=3, desired=2)
    instance = account.launch(environment)
    monkeypatch.delenv("SNS_TOPIC_ARN")
    capsys.readouterr()

    result = run("scale_down", environment, dry_run=True)

    assert result["dry_run"] is True
    assert result["instances"] == [instance]
    assert result["groups"] == [{"name": group, "min": 1, "max": 3, "desired": 2}]
    assert account.states(instance) == ["running"]
    after = account.group_view(group)
    assert after.capacity == (1, 3, 2) and SAVED not in after.tags
    assert emitted_metrics(capsys.readouterr().out) == [], "a rehearsal is not counted"


@pytest.mark.parametrize(("dry_run", "summary"), [(False, "Scaled"), (True, "Dry run")])
def test_a_scaling_run_ends_with_one_log_line_that_says_whether_it_was_a_dry_run(
    account: Account,
    run: Runner,
    environment: str,
    caplog: pytest.LogCaptureFixture,
    dry_run: bool,
    summary: str,
) -> None:
    account.launch(environment)
    caplog.clear()

    run("scale_down", environment, dry_run=dry_run)

    [closing] = [r for r in caplog.records if r.getMessage() in ("Scaled", "Dry run")]
    assert closing.getMessage() == summary


# --- report ---------------------------------------------------------------------------


def test_given_running_instances_with_cpu_data_when_reported_then_idle_ones_are_flagged_and_sent(
    account: Account, run: Runner, environment: str, other_environment: str, inbox: Inbox
) -> None:
    idle = account.launch(environment, name="forgotten-box", autoscale=None)
    busy = account.launch(environment, name="build-agent")
    silent = account.launch(environment)
    stopped = account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[stopped])
    elsewhere = account.launch(other_environment)
    account.cpu(
        (idle, timedelta(hours=1), 2.0),
        (idle, timedelta(hours=20), 4.0),
        (idle, timedelta(hours=30), 95.0),  # before the 24 hours
        (busy, timedelta(hours=2), 40.0),
        (busy, timedelta(hours=3), 60.0),
        (elsewhere, timedelta(hours=1), 1.0),
    )

    result = run("report", environment)

    assert result["instances"] == [
        {
            "instance_id": idle,
            "name": "forgotten-box",
            "instance_type": "t3.micro",
            "average_cpu_percent": 3.0,
            "idle": True,
        },
        {
            "instance_id": busy,
            "name": "build-agent",
            "instance_type": "t3.micro",
            "average_cpu_percent": 50.0,
            "idle": False,
        },
        {
            "instance_id": silent,
            "name": "",
            "instance_type": "t3.micro",
            "average_cpu_percent": None,
            "idle": False,
        },
    ]
    assert result["idle"] == [idle] and result["published"] is True
    [message] = inbox.messages(environment)
    assert message["Subject"] == (
        f"opskit {environment}: 3 running instances, 1 idle (CPU < 5% over 24 h)"
    )
    body = message["Message"]
    assert f"IDLE  {idle}" in body and "forgotten-box" in body
    assert f"      {busy}" in body and "50.00 %" in body
    assert silent in body and "no CPU data" in body
    assert stopped not in body and elsewhere not in body


def test_given_a_report_then_the_window_is_the_24_hours_to_the_last_whole_minute(
    account: Account,
    run: Runner,
    handler: ModuleType,
    environment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handler, "clock", lambda: datetime(2026, 11, 25, 10, 15, 42, 7, UTC))

    result = run("report", environment, dry_run=True)

    assert result["window"] == {
        "start": "2026-11-24T10:15:00+00:00",
        "end": "2026-11-25T10:15:00+00:00",
    }
    assert result["published"] is False


def test_given_an_environment_not_allowed_to_scale_then_it_may_still_be_reported(
    account: Account,
    run: Runner,
    inbox: Inbox,
    other_environment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOWED_ENVIRONMENTS", "")
    instance = account.launch(other_environment)

    result = run("report", other_environment)

    assert [i["instance_id"] for i in result["instances"]] == [instance]
    assert account.states(instance) == ["running"]
    assert len(inbox.messages(other_environment)) == 1


def test_given_more_instances_than_one_request_holds_then_cpu_is_read_in_batches(
    account: Account, handler: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metric data for made-up instance ids: CloudWatch does not check they exist."""
    assert handler.METRIC_QUERIES_PER_CALL == 500, "GetMetricData's limit"
    monkeypatch.setattr(handler, "METRIC_QUERIES_PER_CALL", 2)
    ids = [f"i-{uuid.uuid4().hex[:17]}" for _ in range(5)]
    account.cpu((ids[0], timedelta(hours=1), 10.0), (ids[4], timedelta(hours=1), 30.0))
    cloudwatch = boto3.client("cloudwatch", **_client_kwargs(account.endpoint))
    account.count_calls(cloudwatch)
    end = datetime.now(UTC).replace(second=0, microsecond=0)

    averages = handler.average_cpu(cloudwatch, ids, start=end - timedelta(hours=24), end=end)

    assert account.calls == ["GetMetricData"] * 3
    assert averages == {ids[0]: 10.0, ids[1]: None, ids[2]: None, ids[3]: None, ids[4]: 30.0}


# --- paging, events and configuration -------------------------------------------------


def test_given_more_instances_and_groups_than_a_page_then_every_page_is_read(
    account: Account, handler: ModuleType, environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("INSTANCES_PER_PAGE", "GROUPS_PER_PAGE", "INSTANCES_PER_CALL"):
        monkeypatch.setattr(handler, name, 2)
    instances = [account.launch(environment) for _ in range(5)]
    groups = [account.group(environment, minimum=0, maximum=1, desired=1) for _ in range(3)]
    kwargs = _client_kwargs(account.endpoint)
    ec2, autoscaling = boto3.client("ec2", **kwargs), boto3.client("autoscaling", **kwargs)
    account.count_calls(ec2)
    account.count_calls(autoscaling)

    outcome = handler.scale_down(ec2, autoscaling, environment=environment, dry_run=False)

    assert sorted(outcome.instances) == sorted(instances)
    assert sorted(g["name"] for g in outcome.groups) == sorted(groups)
    assert account.calls.count("DescribeInstances") == 3
    assert account.calls.count("StopInstances") == 3
    assert account.calls.count("DescribeAutoScalingGroups") == 2


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"environment": "dev"}, "event is missing required field 'action'"),
        (
            {"action": "stop", "environment": "dev"},
            "event field 'action' has invalid value 'stop'; valid choices: "
            "scale_down, scale_up, report",
        ),
        ({"action": "scale_down"}, "event is missing required field 'environment'"),
        (
            {"action": "scale_down", "environment": "dev", "dry_run": "yes"},
            "event field 'dry_run' must be true or false",
        ),
    ],
)
def test_given_a_malformed_event_then_the_error_names_the_field(
    handler: ModuleType, lambda_context: LambdaContext, event: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedEventError, match=message):
        handler.lambda_handler(event, lambda_context)


def test_given_no_topic_then_a_real_run_fails_with_a_configuration_error_before_scaling(
    account: Account, run: Runner, environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = account.launch(environment)
    monkeypatch.delenv("SNS_TOPIC_ARN")

    with pytest.raises(ConfigurationError, match="SNS_TOPIC_ARN is not set"):
        run("scale_down", environment)

    assert account.states(instance) == ["running"]


# --- scale_up watches what it started --------------------------------------------------


FIVE_MINUTES = LambdaContext(remaining_seconds=300)
"""The function's timeout: room for the whole watch."""


class Watch(Sleeps):
    """The handler's sleeps, recorded, never slept; after each, what EC2 shows may change."""

    def __init__(self) -> None:
        super().__init__()
        self.then: list[Callable[[], None]] = []

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if self.then:
            self.then.pop(0)()

    def clock(self) -> float:
        """A monotonic clock that moves only by the sleeps."""
        return 1000.0 + sum(self)


def set_state(instance_id: str, state: str, reason: tuple[str, str] | None = None) -> None:
    """What EC2 would show for the instance now (on moto's backend object). moto's EC2
    models are imported here, not at collection: every test worker collects this module."""
    from moto.ec2.models.instances import InstanceState, StateReason

    instance = get_backend("ec2")[ACCOUNT][REGION].get_instance(instance_id)
    instance._state = InstanceState(state, {"pending": 0, "running": 16, "stopped": 80}[state])
    instance.state_reason = StateReason(*reason) if reason else StateReason()


@pytest.fixture
def watch(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Watch:
    """The handler's sleep and clock replaced."""
    watch = Watch()
    monkeypatch.setattr(handler, "sleep", watch)
    monkeypatch.setattr(handler, "monotonic", watch.clock)
    return watch


def after_start(change: Callable[[list[str]], None]) -> None:
    """Runs ``change(instance_ids)`` right after each StartInstances of the handler returns."""
    clients.client("ec2").meta.events.register(
        "after-call.ec2.StartInstances",
        lambda parsed, **_: change([i["InstanceId"] for i in parsed["StartingInstances"]]),
    )


def test_given_an_instance_that_stops_again_after_its_start_then_scale_up_reports_it_failed(
    account: Account,
    handler: ModuleType,
    environment: str,
    inbox: Inbox,
    watch: Watch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN two stopped instances; EC2 accepts the start of both, but one then goes on to
    # stopped: its EBS volume's KMS key may not be used
    healthy, broken = account.launch(environment), account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[healthy, broken])
    key_refused = ("Client.InternalError: Client error on launch", "Client.InternalError")
    after_start(lambda ids: set_state(broken, "stopped", key_refused) if broken in ids else None)
    capsys.readouterr()

    # WHEN the environment is scaled up
    result = handler.lambda_handler(
        {"action": "scale_up", "environment": environment}, FIVE_MINUTES
    )

    # THEN the broken one is a failure with EC2's reason, not a start; the other started
    assert result["instances"] == [healthy]
    assert result["failed"] == [
        {
            "resource": broken,
            "error": "started, then stopped: Client.InternalError: Client error on launch (an "
            "EBS volume's customer managed KMS key the function may not use? see "
            "ebs_encryption_keys)",
        }
    ]
    assert account.states(healthy, broken) == ["running", "stopped"]
    # AND it is counted and reported; known at the first look, so nothing was waited for
    [document] = emitted_metrics(capsys.readouterr().out)
    assert document["FailedResources"] == [1.0]
    [message] = inbox.messages(environment)
    assert f"{broken}: started, then stopped: Client.InternalError" in message["Message"]
    assert watch == []


def test_given_instances_slow_to_start_then_scale_up_waits_until_they_run(
    account: Account, handler: ModuleType, environment: str, watch: Watch
) -> None:
    # GIVEN a stopped instance that, after its start, still shows scale_down's stop for a
    # moment (DescribeInstances is eventually consistent), then is pending, then runs
    instance = account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[instance])
    user_stop = (
        "Client.UserInitiatedShutdown: User initiated shutdown",
        "Client.UserInitiatedShutdown",
    )
    after_start(lambda _: set_state(instance, "stopped", user_stop))
    watch.then = [lambda: set_state(instance, "pending"), lambda: set_state(instance, "running")]

    # WHEN the environment is scaled up
    result = handler.lambda_handler(
        {"action": "scale_up", "environment": environment}, FIVE_MINUTES
    )

    # THEN it counts as started after two polls five seconds apart, with nothing failed
    assert (result["instances"], result["failed"], result["warnings"]) == ([instance], [], [])
    assert watch == [5.0, 5.0]


def test_given_a_dry_run_of_scale_up_then_nothing_starts_and_nothing_is_watched(
    account: Account, run: Runner, environment: str, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rehearsal says what would start; it must not wait for starts it never made."""
    instance = account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[instance])
    monkeypatch.delenv("SNS_TOPIC_ARN")

    result = run("scale_up", environment, dry_run=True)

    assert (result["dry_run"], result["instances"]) == (True, [instance])
    assert (result["failed"], result["warnings"]) == ([], [])
    assert account.states(instance) == ["stopped"]
    assert watch == []


def test_given_an_instance_still_pending_when_the_watch_ends_then_it_is_a_warning_not_a_failure(
    account: Account, handler: ModuleType, environment: str, watch: Watch
) -> None:
    instance = account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[instance])
    after_start(lambda _: set_state(instance, "pending"))

    result = handler.lambda_handler(
        {"action": "scale_up", "environment": environment}, FIVE_MINUTES
    )

    assert (result["instances"], result["failed"]) == ([instance], [])
    assert result["warnings"] == [
        {
            "resource": instance,
            "warning": "still pending 45 s after it was started; not confirmed running",
        }
    ]
    assert sum(watch) == 45.0 and len(watch) == 9, "bounded: 45 s, one look every 5 s"


def test_given_little_time_left_then_the_watch_never_reaches_into_the_margin(
    account: Account, handler: ModuleType, environment: str, watch: Watch
) -> None:
    """LambdaContext has 30 s left: less than the 120 s kept for the report, so one look."""
    instance = account.launch(environment)
    account.ec2.stop_instances(InstanceIds=[instance])
    after_start(lambda _: set_state(instance, "pending"))

    result = handler.lambda_handler(
        {"action": "scale_up", "environment": environment}, LambdaContext()
    )

    assert watch == []
    assert result["warnings"] == [
        {
            "resource": instance,
            "warning": "still pending 0 s after it was started; not confirmed running",
        }
    ]
