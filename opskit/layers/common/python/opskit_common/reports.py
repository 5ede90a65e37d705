"""Reports and alerts published to SNS, always within SNS's limits.

A run report that breaks a limit is rejected whole (``InvalidParameter``), so the one
message that mattered is lost. Subjects are one short printable ASCII line (e-mail
subscribers see them as the mail subject); bodies are cut to the size SNS accepts, and
long lists are summarised rather than dropped.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from opskit_common.clients import client as _default_client

MAX_SUBJECT_CHARS = 99
"""SNS: subjects must be fewer than 100 characters."""
MAX_MESSAGE_BYTES = 256 * 1024
"""SNS: message and attributes together, in UTF-8 bytes."""
_ATTRIBUTE_RESERVE_BYTES = 1024
_ELLIPSIS = "..."


def subject(text: str) -> str:
    """``text`` as a valid SNS subject: printable ASCII, one line, at most 99 characters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    line = " ".join("".join(c if c.isprintable() else " " for c in ascii_text).split())
    if not line:
        line = "opskit report"
    if len(line) > MAX_SUBJECT_CHARS:
        line = line[: MAX_SUBJECT_CHARS - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
    return line


def fit_message(text: str, *, max_bytes: int = MAX_MESSAGE_BYTES - _ATTRIBUTE_RESERVE_BYTES) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, saying how much was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    note = f"\n{_ELLIPSIS} [{len(encoded)} bytes in all; cut to fit SNS]"
    keep = max(0, max_bytes - len(note.encode("utf-8")))
    return encoded[:keep].decode("utf-8", "ignore") + note


def bounded(items: Sequence[str], *, limit: int) -> list[str]:
    """At most ``limit`` items, then one line saying how many more there were."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"{_ELLIPSIS} and {len(items) - limit} more"]


def publish(
    topic_arn: str,
    *,
    subject_line: str,
    message: str,
    attributes: Mapping[str, str] | None = None,
    sns: Any | None = None,
) -> str:
    """Publishes within SNS limits; returns the message id. String attributes only."""
    client = sns if sns is not None else _default_client("sns")
    response = client.publish(
        TopicArn=topic_arn,
        Subject=subject(subject_line),
        Message=fit_message(message),
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value}
            for name, value in (attributes or {}).items()
        },
    )
    return str(response["MessageId"])


def as_json(document: Any) -> str:
    """A report body as indented JSON, readable in an e-mail and parseable by a subscriber."""
    return json.dumps(document, indent=2, sort_keys=True, default=str)
