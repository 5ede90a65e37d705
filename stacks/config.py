"""The `environments` map in cdk.json, read into typed, validated values.

Every problem raises `ConfigError` with one line that names the environment,
the key and what would be valid, so `cdk synth` can print it and exit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opskit import BUILT_IN_PROFILES, EnvironmentProfile, OpsKitError, ProfileError, WebhookFormat

DEFAULT_ENVIRONMENT = "dev"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SECRET_ARN_SUFFIX = re.compile(r"-[^-]{6}$")
_SCHEDULE = re.compile(
    r"^(cron\(\S+( \S+){5}\)|rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\))$"
)
DEFAULT_BACKUP_SCHEDULE = "cron(0 2 * * ? *)"
DEFAULT_BACKUP_TIME_ZONE = "Etc/UTC"


class ConfigError(OpsKitError):
    """The cdk.json environments map, or the chosen environment, is not usable."""


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
    backup_schedule: str = DEFAULT_BACKUP_SCHEDULE
    backup_time_zone: str = DEFAULT_BACKUP_TIME_ZONE
    backup_retention_days: int = 7
    backup_enabled: bool | None = None
    """None: the profile's schedules_enabled."""


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
        "backupSchedule",
        "backupTimeZone",
        "backupRetentionDays",
        "backupEnabled",
    }
)
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

    webhook_secret_name = text("webhookSecretName")
    if _SECRET_ARN_SUFFIX.search(webhook_secret_name):
        raise ConfigError(
            f"{where}: 'webhookSecretName' {webhook_secret_name!r} ends in '-' and six "
            "characters, which Secrets Manager takes for the suffix of a secret's ARN; "
            "rename the secret"
        )
    backup_schedule = (
        text("backupSchedule", _SCHEDULE, "cron(...) with six fields or rate(...)")
        if "backupSchedule" in raw
        else DEFAULT_BACKUP_SCHEDULE
    )
    backup_time_zone = raw.get("backupTimeZone", DEFAULT_BACKUP_TIME_ZONE)
    if not _is_time_zone(backup_time_zone):
        raise ConfigError(
            f"{where}: 'backupTimeZone' must be an IANA time zone such as Europe/London, "
            f"got {backup_time_zone!r}"
        )
    retention = raw.get("backupRetentionDays", 7)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
        raise ConfigError(
            f"{where}: 'backupRetentionDays' must be a whole number of days >= 1, got {retention!r}"
        )

    try:
        profile = replace(BUILT_IN_PROFILES[profile_name], name=name)
    except ProfileError as error:
        raise ConfigError(f"{where}: {error}") from None
    return EnvironmentConfig(
        name=name,
        profile=profile,
        cost_center=text("costCenter"),
        monthly_budget_usd=float(budget),
        webhook_secret_name=webhook_secret_name,
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
        backup_schedule=backup_schedule,
        backup_time_zone=backup_time_zone,
        backup_retention_days=retention,
        backup_enabled=flag("backupEnabled") if "backupEnabled" in raw else None,
    )


def _is_time_zone(name: Any) -> bool:
    """An IANA zone name (checked against the system's zone database; UTC always passes)."""
    if name in ("UTC", DEFAULT_BACKUP_TIME_ZONE):
        return True
    if not isinstance(name, str) or not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
