"""The CloudWatch Logs subscription payload: base64 of gzip of JSON, decoded defensively.

A subscription delivers at most about 1 MB compressed, and gzip can expand a thousand
to one, so decompression stops as soon as the output passes a cap: a hostile or broken
payload costs at most the cap in memory and a few milliseconds, never the sandbox.
"""

from __future__ import annotations

import binascii
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opskit_common.events import type_name

from log_processing.patterns import SEPARATOR

DEFAULT_MAX_DECOMPRESSED_BYTES = 10 * 1024 * 1024
_GZIP = 16 + zlib.MAX_WBITS
_MIN_CHUNK_BYTES = 64 * 1024
_MAX_FIELD_CHARS = 1024
"""Log group and stream names are at most 512 characters; anything longer is not CloudWatch."""


class MalformedPayloadError(ValueError):
    """The event is not a CloudWatch Logs subscription payload; retrying cannot help."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        """What was wrong, for logs and metrics: not-base64, not-gzip, too-large, not-json,
        bad-shape."""


@dataclass(frozen=True)
class LogBatch:
    """One delivery: a log stream's events, or a control message."""

    message_type: str
    owner: str
    log_group: str
    log_stream: str
    events: list[Any]
    """The raw ``logEvents`` entries; `lines` are their messages, in the same order."""
    lines: list[str]
    joined: str
    """`lines` joined by the classifier's separator (joining also checks their type)."""

    @property
    def is_control(self) -> bool:
        """CloudWatch Logs checks that the destination is reachable with these."""
        return self.message_type == "CONTROL_MESSAGE"


def decode(event: Any, *, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> LogBatch:
    """The batch in a subscription event, or MalformedPayloadError naming the problem."""
    data = event.get("awslogs") if isinstance(event, Mapping) else None
    data = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(data, str) or not data:
        raise MalformedPayloadError(
            "event is not a CloudWatch Logs subscription event: no string awslogs.data",
            kind="bad-shape",
        )
    try:
        compressed = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        raise MalformedPayloadError(
            f"awslogs.data is not base64: {error}", kind="not-base64"
        ) from None
    document = _parse_json(gunzip(compressed, max_bytes=max_bytes))
    return _batch(document)


def gunzip(compressed: bytes, *, max_bytes: int) -> bytes | bytearray:
    """gzip-decompressed ``compressed``, stopping once the output passes ``max_bytes``.

    Output comes a quarter of ``max_bytes`` at a time (an ordinary delivery in one
    piece); further pieces are appended to one buffer, so a bomb costs about 1.6 times
    ``max_bytes`` at most, where one-shot decompression would briefly hold its whole
    output twice. Concatenated gzip members are joined, as ``gzip.decompress`` does;
    zero padding after the last one is allowed.
    """
    decompressor = zlib.decompressobj(_GZIP)
    pending = compressed
    output: bytes | bytearray = b""
    limit = max(_MIN_CHUNK_BYTES, max_bytes // 4)
    while True:
        try:
            chunk = decompressor.decompress(pending, min(limit, max_bytes + 1 - len(output)))
        except zlib.error as error:
            raise MalformedPayloadError(
                f"awslogs.data is not gzip: {error}", kind="not-gzip"
            ) from None
        if not output:
            output = chunk
        else:
            if isinstance(output, bytes):
                output = bytearray(output)
            output += chunk
        if len(output) > max_bytes:
            raise MalformedPayloadError(
                f"awslogs.data decompresses to more than {max_bytes} bytes; stopped there",
                kind="too-large",
            )
        if decompressor.eof:
            pending = decompressor.unused_data
            if not pending.strip(b"\x00"):
                return output
            decompressor = zlib.decompressobj(_GZIP)
        elif decompressor.unconsumed_tail:
            pending = decompressor.unconsumed_tail
        elif chunk:  # the chunk filled up: zlib may still hold output back
            pending = b""
        else:
            raise MalformedPayloadError(
                "awslogs.data is truncated gzip (it ends before the gzip end marker)",
                kind="not-gzip",
            )


def _parse_json(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise MalformedPayloadError(
            f"decompressed awslogs.data is not JSON: {str(error)[:120]}", kind="not-json"
        ) from None


def _batch(document: Any) -> LogBatch:
    if not isinstance(document, dict):
        raise _shape(f"payload must be a JSON object, got {type_name(document)}")
    message_type = _text(document, "messageType")
    if message_type not in ("DATA_MESSAGE", "CONTROL_MESSAGE"):
        raise _shape(
            f"payload messageType {message_type[:40]!r} is not DATA_MESSAGE or CONTROL_MESSAGE"
        )
    if message_type == "CONTROL_MESSAGE":
        return LogBatch(
            message_type=message_type,
            owner=str(document.get("owner") or ""),
            log_group=str(document.get("logGroup") or ""),
            log_stream=str(document.get("logStream") or ""),
            events=[],
            lines=[],
            joined="",
        )
    events = document.get("logEvents")
    if not isinstance(events, list):
        raise _shape(f"payload field 'logEvents' must be a list, got {type_name(events)}")
    try:
        lines = [entry["message"] for entry in events]
        joined = SEPARATOR.join(lines)
    except (TypeError, KeyError):
        raise _shape(_first_bad_event(events)) from None
    return LogBatch(
        message_type=message_type,
        owner=_text(document, "owner"),
        log_group=_text(document, "logGroup"),
        log_stream=_text(document, "logStream"),
        events=events,
        lines=lines,
        joined=joined,
    )


def _first_bad_event(events: list[Any]) -> str:
    for index, entry in enumerate(events):
        if not isinstance(entry, dict):
            return f"payload logEvents[{index}] must be an object, got {type_name(entry)}"
        if "message" not in entry:
            return f"payload logEvents[{index}] is missing required field 'message'"
        if not isinstance(entry["message"], str):
            return (
                f"payload logEvents[{index}].message must be a string, "
                f"got {type_name(entry['message'])}"
            )
    return "payload logEvents are malformed"


def _text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if value is None:
        raise _shape(f"payload is missing required field {field!r}")
    if not isinstance(value, str) or not value:
        raise _shape(f"payload field {field!r} must be a non-empty string, got {type_name(value)}")
    if len(value) > _MAX_FIELD_CHARS:
        raise _shape(f"payload field {field!r} is {len(value)} characters long, too long")
    return value


def _shape(message: str) -> MalformedPayloadError:
    return MalformedPayloadError(message, kind="bad-shape")
