"""Links to the AWS console of a region's partition (commercial, China, GovCloud, EU
sovereign...), for messages people click: a commercial console link for a China or
GovCloud region leads nowhere."""

from __future__ import annotations

import re

# botocore's partitions (data/partitions.json: id, regionRegex), in its order, each with
# its console's address, or None where it has no public console (no link beats a wrong
# one). A test checks ids, order and patterns against the installed botocore.
PARTITIONS: tuple[tuple[str, str, str | None], ...] = (
    ("aws", r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$", "https://{region}.console.aws.amazon.com"),
    ("aws-cn", r"^cn\-\w+\-\d+$", "https://console.amazonaws.cn"),
    ("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", "https://{region}.console.amazonaws-eusc.eu"),
    ("aws-iso", r"^us\-iso\-\w+\-\d+$", None),
    ("aws-iso-b", r"^us\-isob\-\w+\-\d+$", None),
    ("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$", None),
    ("aws-iso-f", r"^us\-isof\-\w+\-\d+$", None),
    ("aws-us-gov", r"^us\-gov\-\w+\-\d+$", "https://console.amazonaws-us-gov.com"),
)
_PARTITION_PATTERNS = [(pid, re.compile(rx, re.ASCII), host) for pid, rx, host in PARTITIONS]


def partition_of(region: str) -> str | None:
    """The partition whose region pattern ``region`` matches, first in botocore's order."""
    for pid, pattern, _ in _PARTITION_PATTERNS:
        if pattern.match(region):
            return pid
    return None


def console_link(region: str, path: str) -> str | None:
    """``path`` on the console of the region's partition; None if it has none.

    A region no pattern matches is placed in ``aws``, as botocore places it.
    """
    host = next((h for _, rx, h in _PARTITION_PATTERNS if rx.match(region)), PARTITIONS[0][2])
    return None if host is None else f"{host.format(region=region)}{path}"
