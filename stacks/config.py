"""The `environments` map in cdk.json, read into typed, validated values.

Every problem raises `ConfigError` with one line that names the environment,
the key and what would be valid, so `cdk synth` can print it and exit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from opskit import BUILT_IN_PROFILES, EnvironmentProfile, OpsKitError, ProfileError, WebhookFormat

DEFAULT_ENVIRONMENT = "dev"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")


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
    log_groups: tuple[str, ...] = ()
    watch_stack_functions: bool = True
    log_filter_pattern: str | None = None
    error_patterns: tuple[str, ...] | None = None
    critical_patterns: tuple[str, ...] | None = None
    alert_window_minutes: int = 15


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
        "logGroups",
        "watchStackFunctions",
        "logFilterPattern",
        "errorPatterns",
        "criticalPatterns",
        "alertWindowMinutes",
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

    def flag(key: str, default: bool = False) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}")
        return value

    def patterns(key: str) -> tuple[str, ...] | None:
        if key not in raw:
            return None
        values = strings(key)
        for index, value in enumerate(values):
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as error:
                raise ConfigError(
                    f"{where}: {key!r} item {index} {value!r} is not a regular expression: {error}"
                ) from None
        return values

    window = raw.get("alertWindowMinutes", 15)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 1440:
        raise ConfigError(
            f"{where}: 'alertWindowMinutes' must be a whole number of minutes from 1 to 1440, "
            f"got {window!r}"
        )
    filter_pattern = raw.get("logFilterPattern")
    if filter_pattern is not None and (
        not isinstance(filter_pattern, str) or len(filter_pattern) > 1024
    ):
        raise ConfigError(
            f"{where}: 'logFilterPattern' must be a CloudWatch Logs filter pattern string "
            f"of at most 1024 characters, got {filter_pattern!r:.60}"
        )

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
        log_groups=strings("logGroups", _LOG_GROUP, "a CloudWatch Logs log group name"),
        watch_stack_functions=flag("watchStackFunctions", default=True),
        log_filter_pattern=filter_pattern,
        error_patterns=patterns("errorPatterns"),
        critical_patterns=patterns("criticalPatterns"),
        alert_window_minutes=window,
    )
