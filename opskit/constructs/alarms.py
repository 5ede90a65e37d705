"""The one alarm factory: a metric and a threshold per severity make a tier of alarms.

Modelled on cdk-monitoring-constructs: thresholds are a mapping from severity
to value, so warning and critical tiers come from one call, and a caller
drops a tier by leaving it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Protocol

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from opskit.constructs.paths import ALARM_DESCRIPTION, TextField, aws_text

Thresholds = Mapping["Severity", float]


class AlarmSink(Protocol):
    """Where alarms notify someone: `Monitoring`."""

    def add_alarm(self, alarm: cloudwatch.Alarm, severity: Severity) -> None: ...


class Severity(Enum):
    """How urgently a person must act when an alarm fires."""

    WARNING = "warning"
    CRITICAL = "critical"


def create_alarms(
    scope: Construct,
    id: str,
    *,
    metric: cloudwatch.IMetric,
    thresholds: Thresholds,
    description: str,
    actions_enabled: bool,
    monitoring: AlarmSink | None = None,
    comparison: cloudwatch.ComparisonOperator = (
        cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    ),
    evaluation_periods: int = 1,
    datapoints_to_alarm: int | None = None,
) -> dict[Severity, cloudwatch.Alarm]:
    """One alarm per severity in `thresholds`, each notifying that severity's topic."""
    alarms: dict[Severity, cloudwatch.Alarm] = {}
    for severity in Severity:
        if severity not in thresholds:
            continue
        threshold = thresholds[severity]
        alarm = cloudwatch.Alarm(
            scope,
            f"{id}{severity.value.title()}Alarm",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            actions_enabled=actions_enabled,
            alarm_description=_described(severity, description, threshold),
        )
        if monitoring is not None:
            monitoring.add_alarm(alarm, severity)
        alarms[severity] = alarm
    return alarms


def _described(severity: Severity, description: str, threshold: float) -> str:
    """`[WARNING] <description> (threshold 5)`, the description cut to fit CloudWatch's limit."""
    prefix, suffix = f"[{severity.value.upper()}] ", f" (threshold {threshold:g})"
    room = TextField(ALARM_DESCRIPTION.limit - len(prefix) - len(suffix))
    return f"{prefix}{aws_text(description, room)}{suffix}"
