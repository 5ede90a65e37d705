"""Console links per partition (opskit_common.console): the notifier's and the log
processor's messages link to the console of the event's partition, or to none where the
partition has no public console."""

from __future__ import annotations

import pytest
from botocore.endpoint_provider import RuleSetStandardLibrary
from botocore.loaders import create_loader
from opskit_common.console import PARTITIONS, console_link, partition_of

BOTOCORE_PARTITIONS = create_loader().load_data("partitions")["partitions"]


def test_the_partition_table_is_botocores_partitions_in_botocores_order() -> None:
    """When botocore learns a partition or changes a pattern, this fails: update PARTITIONS."""
    assert [(pid, pattern) for pid, pattern, _ in PARTITIONS] == [
        (p["id"], p["regionRegex"]) for p in BOTOCORE_PARTITIONS
    ]


def test_every_region_botocore_knows_is_placed_in_botocores_partition() -> None:
    botocore = RuleSetStandardLibrary({"partitions": BOTOCORE_PARTITIONS})
    endpoints = create_loader().load_data("endpoints")["partitions"]
    listed = {r for p in [*BOTOCORE_PARTITIONS, *endpoints] for r in p["regions"]}
    pseudo = {r for r in listed if partition_of(r) is None}
    assert pseudo <= {f"{p['id']}-global" for p in BOTOCORE_PARTITIONS}, "only *-global aliases"
    for region in sorted(listed - pseudo):
        assert partition_of(region) == botocore.aws_partition(region)["name"], region
    for region in ("xy-newplace-1", "eusc-fr-south-1"):
        assert partition_of(region) is None
        assert botocore.aws_partition(region)["name"] == "aws"


@pytest.mark.parametrize(
    ("region", "link"),
    [
        ("eu-west-1", "https://eu-west-1.console.aws.amazon.com/x"),
        ("cn-north-1", "https://console.amazonaws.cn/x"),
        ("us-gov-east-1", "https://console.amazonaws-us-gov.com/x"),
        ("eusc-de-east-1", "https://eusc-de-east-1.console.amazonaws-eusc.eu/x"),
        ("us-iso-east-1", None),
        ("xy-newplace-1", "https://xy-newplace-1.console.aws.amazon.com/x"),
    ],
)
def test_a_link_opens_the_console_of_the_regions_partition_or_none(
    region: str, link: str | None
) -> None:
    assert console_link(region, "/x") == link
