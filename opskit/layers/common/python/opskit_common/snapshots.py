"""The EBS snapshots EC2 refuses to delete whoever owns them: those an AMI of the account
uses, and those under an EBS snapshot lock. The backup's retention and the snapshot
cleanup both skip them rather than fail on them every run."""

from __future__ import annotations

from typing import Any

PAGE_SIZE = 1000
"""DescribeSnapshots, DescribeImages and DescribeLockedSnapshots answer at most 1,000 items
a page."""
LOCKED_STATES = ["compliance-cooloff", "governance", "compliance"]
"""Lock states in which EBS refuses to delete a snapshot (not `expired`)."""


def ami_snapshot_ids(ec2: Any) -> set[str]:
    """Snapshots referenced by the block device mappings of the account's own AMIs.

    Disabled AMIs are included: re-enabling one needs its snapshots.
    """
    referenced: set[str] = set()
    pages = ec2.get_paginator("describe_images").paginate(
        Owners=["self"], IncludeDisabled=True, PaginationConfig={"PageSize": PAGE_SIZE}
    )
    for page in pages:
        for image in page.get("Images") or ():
            for mapping in image.get("BlockDeviceMappings") or ():
                snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
                if snapshot_id:
                    referenced.add(snapshot_id)
    return referenced


def locked_snapshot_ids(ec2: Any) -> set[str]:
    """Snapshots under an EBS snapshot lock that EBS enforces, every page (the SDK has no
    paginator for DescribeLockedSnapshots)."""
    locked: set[str] = set()
    request: dict[str, Any] = {
        "Filters": [{"Name": "lock-state", "Values": LOCKED_STATES}],
        "MaxResults": PAGE_SIZE,
    }
    while True:
        page = ec2.describe_locked_snapshots(**request)
        locked.update(str(s["SnapshotId"]) for s in page.get("Snapshots") or ())
        token = page.get("NextToken")
        if not token:
            return locked
        request["NextToken"] = token
