"""Metrics as one CloudWatch Embedded Metric Format (EMF) line per delivery.

EMF is a JSON log line that CloudWatch turns into metrics: no API call on the hot path,
no extra cold-start imports. Each line carries two dimension sets: ``LogGroup`` (which
group is failing) and ``Environment`` (the total an environment's alarms watch, so two
environments in one account never share an alarm's metric).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

ERROR_COUNT = "ErrorCount"
CRITICAL_COUNT = "CriticalCount"
PROCESSED_EVENTS = "ProcessedEvents"
MALFORMED_PAYLOADS = "MalformedPayloads"


def delivery(
    *,
    namespace: str,
    environment: str,
    log_group: str,
    processed: int,
    errors: int,
    critical: int,
    timestamp_ms: int,
) -> str:
    """The EMF line of one processed delivery (zeros included: a quiet group reads 0)."""
    return _emf(
        namespace=namespace,
        timestamp_ms=timestamp_ms,
        directives=[
            (["LogGroup"], [ERROR_COUNT, CRITICAL_COUNT]),
            (
                _environment(environment),
                [ERROR_COUNT, CRITICAL_COUNT, PROCESSED_EVENTS, MALFORMED_PAYLOADS],
            ),
        ],
        values={
            "LogGroup": log_group,
            **({"Environment": environment} if environment else {}),
            ERROR_COUNT: errors,
            CRITICAL_COUNT: critical,
            PROCESSED_EVENTS: processed,
            MALFORMED_PAYLOADS: 0,
        },
    )


def malformed(*, namespace: str, environment: str, timestamp_ms: int) -> str:
    """The EMF line of a payload that could not be read (its log group is unknown)."""
    return _emf(
        namespace=namespace,
        timestamp_ms=timestamp_ms,
        directives=[(_environment(environment), [MALFORMED_PAYLOADS])],
        values={
            **({"Environment": environment} if environment else {}),
            MALFORMED_PAYLOADS: 1,
        },
    )


def _environment(environment: str) -> list[str]:
    return ["Environment"] if environment else []


def _emf(
    *,
    namespace: str,
    timestamp_ms: int,
    directives: list[tuple[list[str], list[str]]],
    values: Mapping[str, object],
) -> str:
    return json.dumps(
        {
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": [dimensions],
                        "Metrics": [{"Name": name, "Unit": "Count"} for name in metrics],
                    }
                    for dimensions, metrics in directives
                ],
            },
            **values,
        },
        separators=(",", ":"),
    )
