"""AWS resource tags as plain dicts, and the tags that mark what opskit owns.

EC2 and RDS answer tags as ``[{"Key": ..., "Value": ...}]`` (and ``None`` when a resource
has none); ownership decisions read much better against a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BACKUP_OWNERSHIP_TAGS: Mapping[str, str] = {
    "AutomatedBackup": "true",
    "CreatedBy": "opskit-backup",
}
"""Carried by every snapshot the backup function creates; only such snapshots are its to delete."""

PERMANENT_TAG = ("Retention", "permanent")
"""A snapshot carrying this tag is never deleted, whoever made it."""


def as_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """``[{"Key": k, "Value": v}]`` (or None) as ``{k: v}``; entries without a key are dropped."""
    return {
        str(tag["Key"]): str(tag.get("Value") or "")
        for tag in tags or ()
        if isinstance(tag, Mapping) and tag.get("Key")
    }


def as_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``{k: v}`` as the ``[{"Key": k, "Value": v}]`` the EC2 and RDS APIs take, in key order."""
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def carries(tags: Mapping[str, str], required: Mapping[str, str]) -> bool:
    """Whether ``tags`` has every key of ``required`` with exactly its value."""
    return all(tags.get(key) == value for key, value in required.items())


def is_permanent(tags: Mapping[str, str]) -> bool:
    """``Retention=permanent`` (value compared case-insensitively: people type these)."""
    key, value = PERMANENT_TAG
    return tags.get(key, "").strip().lower() == value
