"""The `environments` map in cdk.json, read into typed, validated values.

Every problem raises `ConfigError` with one line that names the environment,
the key and what would be valid, so `cdk synth` can print it and exit.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field, replace
from typing import Any

from aws_cdk import TimeZone

from opskit import (
    BUILT_IN_PROFILES,
    CleanupScope,
    EnvironmentProfile,
    OpsKitError,
    ProfileError,
    SchedulerTimes,
    WebhookFormat,
)
from opskit.constructs.environment_scheduler import TIME_OF_DAY, WEEK_DAY, WEEK_DAYS

DEFAULT_ENVIRONMENT = "dev"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SCHEDULE = re.compile(r"^(cron\((\S+ ){5}\S+\)|rate\(\d+ (minute|hour|day)s?\))$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")


class ConfigError(OpsKitError):
    """The cdk.json environments map, or the chosen environment, is not usable."""


@dataclass(frozen=True)
class SnapshotCleanupConfig:
    """The `snapshotCleanup` object of an environment; every key is optional."""

    retention_days: int = 30
    scope: CleanupScope = CleanupScope.OWNED
    min_keep_per_volume: int = 1
    schedule: str = "cron(0 3 ? * SUN *)"
    """An EventBridge Scheduler cron or rate expression."""
    time_zone: str = "Etc/UTC"
    enabled: bool | None = None
    """Whether the schedule is on; None follows the profile."""
    dry_run: bool = False


_SNAPSHOT_CLEANUP_KEYS = frozenset(
    {"retentionDays", "scope", "minKeepPerVolume", "schedule", "timeZone", "enabled", "dryRun"}
)


def _snapshot_cleanup(raw: Any, where: str) -> SnapshotCleanupConfig:
    """`snapshotCleanup`, validated; every error names the key as `snapshotCleanup.<key>`."""
    if raw is None:
        return SnapshotCleanupConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'snapshotCleanup' must be a JSON object, got {raw!r}")
    unknown = sorted(set(raw) - _SNAPSHOT_CLEANUP_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key 'snapshotCleanup.{unknown[0]}'; valid keys: "
            f"{', '.join(sorted(_SNAPSHOT_CLEANUP_KEYS))}"
        )
    defaults = SnapshotCleanupConfig()

    def whole(key: str, default: int, minimum: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{where}: 'snapshotCleanup.{key}' must be a whole number >= {minimum}, "
                f"got {value!r}"
            )
        return value

    def flag(key: str, default: bool | None) -> bool | None:
        value = raw.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(
                f"{where}: 'snapshotCleanup.{key}' must be true or false, got {value!r}"
            )
        return value

    scopes = [s.value for s in CleanupScope]
    scope = raw.get("scope", defaults.scope.value)
    if scope not in scopes:
        raise ConfigError(
            f"{where}: 'snapshotCleanup.scope' {scope!r} is not one of {', '.join(scopes)}"
        )
    schedule = raw.get("schedule", defaults.schedule)
    if not isinstance(schedule, str) or not _SCHEDULE.match(schedule):
        raise ConfigError(
            f"{where}: 'snapshotCleanup.schedule' must be an EventBridge Scheduler expression "
            f"such as 'cron(0 3 ? * SUN *)' or 'rate(7 days)', got {schedule!r}"
        )
    time_zone = raw.get("timeZone", defaults.time_zone)
    try:
        zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, TypeError, ValueError):
        raise ConfigError(
            f"{where}: 'snapshotCleanup.timeZone' must be an IANA time zone such as "
            f"'Europe/London', got {time_zone!r}"
        ) from None
    return SnapshotCleanupConfig(
        retention_days=whole("retentionDays", defaults.retention_days, 1),
        scope=CleanupScope(scope),
        min_keep_per_volume=whole("minKeepPerVolume", defaults.min_keep_per_volume, 0),
        schedule=schedule,
        time_zone=time_zone,
        enabled=flag("enabled", None),
        dry_run=bool(flag("dryRun", False)),
    )


@dataclass(frozen=True)
class EnvironmentConfig:
    """One environment's entry in the cdk.json `environments` map."""

    name: str
    profile: EnvironmentProfile
    cost_center: str
    monthly_budget_usd: float
    webhook_secret_name: str
    webhook_format: WebhookFormat = WebhookFormat.SLACK
    account: str | None = None
    region: str | None = None
    alert_emails: tuple[str, ...] = ()
    report_emails: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    include_stage_events: bool = False
    include_action_events: bool = False
    snapshot_cleanup: SnapshotCleanupConfig = field(default_factory=SnapshotCleanupConfig)
    scheduler_times: SchedulerTimes = field(default_factory=SchedulerTimes)
    ebs_key_arns: tuple[str, ...] = ()
    """Customer managed KMS keys of EBS volumes the environment scheduler starts instances with."""


_KEYS = frozenset(
    {
        "profile",
        "account",
        "region",
        "alertEmails",
        "reportEmails",
        "webhookSecretName",
        "webhookFormat",
        "pipelines",
        "includeStageEvents",
        "includeActionEvents",
        "costCenter",
        "monthlyBudgetUsd",
        "snapshotCleanup",
        "environmentScheduler",
    }
)
_SCHEDULER_KEYS = {
    "timeZone": "time_zone",
    "weekDays": "week_days",
    "scaleDownAt": "scale_down_at",
    "scaleUpAt": "scale_up_at",
    "reportDay": "report_day",
    "reportAt": "report_at",
}
_SCALING_KEYS = ("weekDays", "scaleDownAt", "scaleUpAt", "ebsKeyArns")
"""Keys that mean something only where the profile scales down off-hours."""
_REQUIRED = ("costCenter", "monthlyBudgetUsd", "webhookSecretName")


def load_environment(environments: Any, name: str | None) -> EnvironmentConfig:
    """The config of environment `name` (dev when None) from the cdk.json map."""
    name = name or DEFAULT_ENVIRONMENT
    if not isinstance(environments, dict) or not environments:
        raise ConfigError('cdk.json context has no "environments" map of environment names')
    if name not in environments:
        raise ConfigError(
            f"unknown environment {name!r}; valid choices: {', '.join(sorted(environments))}"
        )
    raw = environments[name]
    where = f"environment {name!r}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_KEYS))}"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")

    def text(key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise ConfigError(f"{where}: {key!r} must be {what}, got {value!r}")
        return value

    def strings(
        key: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> tuple[str, ...]:
        values = raw.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(
                f"{where}: {key!r} must be a list of non-empty strings, got {values!r}"
            )
        for value in values:
            if pattern is not None and not pattern.match(value):
                raise ConfigError(f"{where}: {key!r} has {value!r}, which is not {what}")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{where}: {key!r} lists {repeated[0]!r} more than once")
        return tuple(values)

    def flag(key: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}")
        return value

    profile_name = raw.get("profile", name)
    if profile_name not in BUILT_IN_PROFILES:
        raise ConfigError(
            f'{where}: profile {profile_name!r} is not built in; set "profile" to one of '
            f"{', '.join(BUILT_IN_PROFILES)}"
        )
    budget = raw["monthlyBudgetUsd"]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
        raise ConfigError(f"{where}: 'monthlyBudgetUsd' must be a positive number, got {budget!r}")
    formats = [f.value for f in WebhookFormat]
    webhook_format = raw.get("webhookFormat", WebhookFormat.SLACK.value)
    if webhook_format not in formats:
        raise ConfigError(
            f"{where}: 'webhookFormat' {webhook_format!r} is not one of {', '.join(formats)}"
        )

    try:
        profile = replace(BUILT_IN_PROFILES[profile_name], name=name)
    except ProfileError as error:
        raise ConfigError(f"{where}: {error}") from None
    scheduler_times, ebs_key_arns = _scheduler(raw.get("environmentScheduler", {}), where, profile)
    return EnvironmentConfig(
        name=name,
        profile=profile,
        cost_center=text("costCenter"),
        monthly_budget_usd=float(budget),
        webhook_secret_name=text("webhookSecretName"),
        webhook_format=WebhookFormat(webhook_format),
        account=text("account", _ACCOUNT, "a 12-digit AWS account id")
        if "account" in raw
        else None,
        region=text("region", _REGION, "an AWS region such as eu-west-1")
        if "region" in raw
        else None,
        alert_emails=strings("alertEmails", _EMAIL, "an e-mail address"),
        report_emails=strings("reportEmails", _EMAIL, "an e-mail address"),
        pipelines=strings("pipelines"),
        include_stage_events=flag("includeStageEvents"),
        include_action_events=flag("includeActionEvents"),
        snapshot_cleanup=_snapshot_cleanup(raw.get("snapshotCleanup"), where),
        scheduler_times=scheduler_times,
        ebs_key_arns=ebs_key_arns,
    )


def _scheduler(
    raw: Any, where: str, profile: EnvironmentProfile
) -> tuple[SchedulerTimes, tuple[str, ...]]:
    """The `environmentScheduler` object: times in a time zone, and EBS key ARNs."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'environmentScheduler' must be a JSON object, got {raw!r}")
    valid = [*_SCHEDULER_KEYS, "ebsKeyArns"]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key 'environmentScheduler.{unknown[0]}'; "
            f"valid keys: {', '.join(sorted(valid))}"
        )
    if not profile.scale_down_off_hours:
        useless = [key for key in _SCALING_KEYS if key in raw]
        if useless:
            raise ConfigError(
                f"{where}: 'environmentScheduler.{useless[0]}' has no effect: profile "
                f"{profile.name!r} does not scale down off-hours"
            )
    patterns = {
        "weekDays": (WEEK_DAYS, "days such as MON-FRI or MON,WED,FRI"),
        "reportDay": (WEEK_DAY, "one of SUN, MON, TUE, WED, THU, FRI, SAT"),
        "scaleDownAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
        "scaleUpAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
        "reportAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
    }
    values: dict[str, Any] = {}
    for key, (pattern, what) in patterns.items():
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not pattern.match(value):
                raise ConfigError(
                    f"{where}: 'environmentScheduler.{key}' must be {what}, got {value!r}"
                )
            values[_SCHEDULER_KEYS[key]] = value
    if "timeZone" in raw:
        zone = raw["timeZone"]
        if not isinstance(zone, str) or not _is_time_zone(zone):
            raise ConfigError(
                f"{where}: 'environmentScheduler.timeZone' must be an IANA time zone such as "
                f"Europe/London, got {zone!r}"
            )
        values["time_zone"] = TimeZone.of(zone)
    times = SchedulerTimes(**values)
    if times.scale_down_at == times.scale_up_at:
        raise ConfigError(
            f"{where}: 'environmentScheduler.scaleDownAt' and 'scaleUpAt' are both "
            f"{times.scale_up_at}"
        )
    arns = raw.get("ebsKeyArns", [])
    if not isinstance(arns, list) or not all(
        isinstance(arn, str) and _KMS_KEY_ARN.match(arn) for arn in arns
    ):
        raise ConfigError(
            f"{where}: 'environmentScheduler.ebsKeyArns' must be a list of KMS key ARNs, "
            f"got {arns!r}"
        )
    return times, tuple(arns)


def _is_time_zone(name: str) -> bool:
    """Known to the IANA database (where the machine has one; the name's shape otherwise)."""
    known = zoneinfo.available_timezones()
    if known:
        return name in known
    return re.fullmatch(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", name) is not None
