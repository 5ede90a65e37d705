"""The `environments` map of cdk.json, read into typed, validated values.

Every problem raises `ConfigError` with one line that names the environment,
the key (as a dotted path inside nested objects) and what would be valid, so
`cdk synth` can print it and exit. One reader, `Reader`, reads every JSON
object of the map the same way; each capability has a nested object of its own.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TypeVar

from aws_cdk import TimeZone
from aws_cdk import aws_scheduler as scheduler

from opskit import (
    BUILT_IN_PROFILES,
    CleanupScope,
    EnvironmentProfile,
    OpsKitError,
    Packaging,
    ProfileError,
    SchedulerTimes,
    WebhookFormat,
)
from opskit.bundling import function_names
from opskit.constructs.environment_scheduler import TIME_OF_DAY, WEEK_DAY, WEEK_DAYS
from opskit.constructs.user_service import USER_COUNT_SOURCES
from opskit.constructs.user_service.api import ORIGIN
from opskit.constructs.user_service.firewall import EVALUATION_WINDOWS, ApiFirewall
from opskit.constructs.user_service.pipeline import SENDER_ADDRESS

DEFAULT_ENVIRONMENT = "dev"

ACCOUNT_ID = re.compile(r"^\d{12}$")
REGION_NAME = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+-\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SECRET_ARN_SUFFIX = re.compile(r"-[^-]{6}$")
_CRON = re.compile(r"^cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)$")
_RATE = re.compile(r"^rate\(([1-9]\d*) (minute|hour|day)(s?)\)$")
_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
_ORIGIN = re.compile(rf"^(\*|{ORIGIN.pattern[1:-1]})$")
_SES_CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REQUIRED: Any = object()

E = TypeVar("E", bound=Enum)


class ConfigError(OpsKitError):
    """The cdk.json environments map, or the chosen environment, is not usable."""


@dataclass(frozen=True)
class ScheduleConfig:
    """When a capability's function runs: an EventBridge Scheduler expression in a time zone."""

    expression: str
    time_zone: str = "Etc/UTC"
    enabled: bool | None = None
    """Whether the schedule is on; None follows the profile's `schedules_enabled`."""

    def schedule_expression(self) -> scheduler.ScheduleExpression:
        return scheduler.ScheduleExpression.expression(
            self.expression, time_zone=TimeZone.of(self.time_zone)
        )


@dataclass(frozen=True)
class BackupConfig:
    """The `backup` object: nightly EC2/RDS snapshots and their retention."""

    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("cron(0 2 * * ? *)"))
    retention_days: int = 7


@dataclass(frozen=True)
class SnapshotCleanupConfig:
    """The `snapshotCleanup` object: weekly deletion of expired EBS snapshots."""

    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("cron(0 3 ? * SUN *)"))
    retention_days: int = 30
    scope: CleanupScope = CleanupScope.OWNED
    min_keep_per_volume: int = 1
    dry_run: bool = False


@dataclass(frozen=True)
class EnvironmentSchedulerConfig:
    """The `environmentScheduler` object: off-hours times and the EBS keys instances use."""

    times: SchedulerTimes = field(default_factory=SchedulerTimes)
    ebs_key_arns: tuple[str, ...] = ()
    """Customer managed KMS keys of EBS volumes the scheduler starts instances with."""


@dataclass(frozen=True)
class LogProcessorConfig:
    """The `logProcessor` object: which log groups to watch and what counts as an error."""

    log_groups: tuple[str, ...] = ()
    watch_stack_functions: bool = True
    filter_pattern: str | None = None
    """A CloudWatch Logs filter pattern for the subscriptions; None: every event."""
    error_patterns: tuple[str, ...] | None = None
    """Regular expressions replacing the default error patterns; None: the defaults."""
    critical_patterns: tuple[str, ...] | None = None
    alert_window_minutes: int = 15


@dataclass(frozen=True)
class UserServiceConfig:
    """The `userService` object: the user API, its e-mail sender and its limits."""

    ses_sender: str
    ses_configuration_set: str | None = None
    allowed_origins: tuple[str, ...] = ()
    rate_limit: int = 100
    burst_limit: int = 200
    account_logging_role: bool = True
    """Whether the stack sets the account's API Gateway CloudWatch Logs role."""
    sender_concurrency: int = 10
    reserve_sender_concurrency: bool = True
    user_count_source: str = "describe"
    cognito_ses_region: str | None = None
    """Where Cognito sends the user pool's e-mail through SES, from `ses_sender`; None:
    Cognito's own sender, limited to a few dozen e-mails a day."""
    cognito_ses_domain_identity: bool = False
    """Whether SES verified the sender's domain (else the address itself)."""
    firewall: ApiFirewall | None = None
    """The stage's own AWS WAF web ACL; None: none."""


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
    backup: BackupConfig = field(default_factory=BackupConfig)
    snapshot_cleanup: SnapshotCleanupConfig = field(default_factory=SnapshotCleanupConfig)
    environment_scheduler: EnvironmentSchedulerConfig = field(
        default_factory=EnvironmentSchedulerConfig
    )
    log_processor: LogProcessorConfig = field(default_factory=LogProcessorConfig)
    verifier_account: str | None = None
    """Another account whose principals may invoke the smoke-tested aliases: the delivery
    pipeline's, when it verifies this environment from there."""
    user_service: UserServiceConfig | None = None
    """None: the environment has no user service."""
    packaging: Mapping[str, Packaging] = field(default_factory=dict)
    """How functions are packaged, by name (`notification`, `user_service.api`); others: zip."""


class Reader:
    """One JSON object of the map, read key by key; errors name `where` and the key's path."""

    def __init__(self, raw: Any, *, where: str, path: str, keys: Iterable[str]) -> None:
        self.where, self.path, self.keys = where, path, frozenset(keys)
        if not isinstance(raw, dict):
            if not path:
                raise self.error(f"expected a JSON object, got {type(raw).__name__}")
            raise self.error(f"{self.name('')} must be a JSON object, got {raw!r}")
        unknown = sorted(set(raw) - self.keys)
        if unknown:
            raise self.error(
                f"unknown key {self.name(unknown[0])}; valid keys: {', '.join(sorted(self.keys))}"
            )
        self.raw: dict[str, Any] = raw

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}" if self.where else message)

    def name(self, key: str) -> str:
        """How errors name `key`: its dotted path, quoted."""
        return repr(".".join(p for p in (self.path, key) if p))

    def _get(self, key: str, default: Any) -> Any:
        if key not in self.raw and default is _REQUIRED:
            raise self.error(f"missing required key {self.name(key)}")
        return self.raw.get(key, default)

    def wrong(self, key: str, what: str) -> ConfigError:
        return self.error(f"{self.name(key)} must be {what}, got {self.raw.get(key)!r}")

    def child(self, key: str, keys: Iterable[str]) -> Reader:
        """The nested object at `key` (empty when absent)."""
        return Reader(
            self.raw.get(key, {}),
            where=self.where,
            path=".".join(p for p in (self.path, key) if p),
            keys=keys,
        )

    def text(
        self, key: str, default: Any = _REQUIRED, pattern: re.Pattern[str] | None = None, what=""
    ) -> Any:
        value = self._get(key, default)
        if key not in self.raw:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.wrong(key, "a non-empty string")
        if pattern is not None and not pattern.match(value):
            raise self.wrong(key, what)
        return value

    def strings(
        self, key: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> tuple[str, ...]:
        values = self._get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise self.wrong(key, "a list of non-empty strings")
        for value in values:
            if pattern is not None and not pattern.match(value):
                raise self.error(f"{self.name(key)} has {value!r}, which is not {what}")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise self.error(f"{self.name(key)} lists {repeated[0]!r} more than once")
        return tuple(values)

    def flag(self, key: str, default: bool | None = False) -> Any:
        value = self._get(key, default)
        if key in self.raw and not isinstance(value, bool):
            raise self.wrong(key, "true or false")
        return value

    def whole(self, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.wrong(key, f"a whole number >= {minimum}")
        if maximum is not None and value > maximum:
            raise self.wrong(key, f"a whole number from {minimum} to {maximum}")
        return value

    def regexes(self, key: str) -> tuple[str, ...] | None:
        """A list of regular expressions; None when absent."""
        if key not in self.raw:
            return None
        values = self.strings(key)
        for index, value in enumerate(values):
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as error:
                raise self.error(
                    f"{self.name(key)} item {index} {value!r} is not a regular expression: {error}"
                ) from None
        return values

    def positive(self, key: str) -> float:
        value = self._get(key, _REQUIRED)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.wrong(key, "a positive number")
        return float(value)

    def choice(self, key: str, kind: type[E], default: E) -> E:
        value = self._get(key, default.value)
        valid = [member.value for member in kind]
        if value not in valid:
            raise self.error(f"{self.name(key)} {value!r} is not one of {', '.join(valid)}")
        return kind(value)

    def time_zone(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or value not in _time_zones():
            raise self.wrong(key, "an IANA time zone such as Europe/London")
        return value

    def schedule(self, default: ScheduleConfig) -> ScheduleConfig:
        """`schedule`, `timeZone` and `enabled` of a capability's object."""
        expression = self.text("schedule", default.expression)
        if not _is_schedule(expression):
            raise self.wrong(
                "schedule",
                "an EventBridge Scheduler expression such as 'cron(0 3 ? * SUN *)' or "
                "'rate(7 days)'",
            )
        return ScheduleConfig(
            expression=expression,
            time_zone=self.time_zone("timeZone", default.time_zone),
            enabled=self.flag("enabled", default.enabled),
        )


def _is_schedule(expression: str) -> bool:
    """What EventBridge Scheduler accepts, as far as its form: a cron of six fields with `?`
    in exactly one of day-of-month and day-of-week, or a rate whose unit is singular for 1
    and plural otherwise."""
    cron = _CRON.match(expression)
    if cron is not None:
        return (cron[3] == "?") != (cron[5] == "?")
    rate = _RATE.match(expression)
    return rate is not None and (rate[1] == "1") == (rate[3] == "")


_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})
"""In the system's zone database, but no time zone a schedule may name."""


@functools.cache
def _time_zones() -> frozenset[str]:
    """Walks the whole zone database: once per process, not once per schedule."""
    return frozenset((zoneinfo.available_timezones() | {"UTC"}) - _NOT_ZONES)


_KEYS = (
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
    "backup",
    "snapshotCleanup",
    "environmentScheduler",
    "logProcessor",
    "userService",
    "packaging",
)
_SCHEDULE_KEYS = ("schedule", "timeZone", "enabled")


def load_environment(environments: Any, name: str | None) -> EnvironmentConfig:
    """The config of environment `name` (dev when None) from the cdk.json map."""
    name = name or DEFAULT_ENVIRONMENT
    if not isinstance(environments, dict) or not environments:
        raise ConfigError('cdk.json context has no "environments" map of environment names')
    if name not in environments:
        raise ConfigError(
            f"unknown environment {name!r}; valid choices: {', '.join(sorted(environments))}"
        )
    where = f"environment {name!r}"
    raw = Reader(environments[name], where=where, path="", keys=_KEYS)
    for key in ("costCenter", "monthlyBudgetUsd", "webhookSecretName"):
        raw.text(key) if key != "monthlyBudgetUsd" else raw.positive(key)

    profile_name = raw.raw.get("profile", name)
    if profile_name not in BUILT_IN_PROFILES:
        raise raw.error(
            f'profile {profile_name!r} is not built in; set "profile" to one of '
            f"{', '.join(BUILT_IN_PROFILES)}"
        )
    if name in BUILT_IN_PROFILES and profile_name != name:
        raise raw.error(
            f'"profile" is for environments of other names; {name!r} uses the {name} profile '
            f"(another would change its data protection in one deployment): name the "
            f"environment otherwise to give it the {profile_name!r} profile"
        )
    try:
        profile = replace(BUILT_IN_PROFILES[profile_name], name=name)
    except ProfileError as error:
        raise raw.error(str(error)) from None

    webhook_secret_name = raw.text("webhookSecretName")
    if _SECRET_ARN_SUFFIX.search(webhook_secret_name):
        raise raw.error(
            f"'webhookSecretName' {webhook_secret_name!r} ends in '-' and six characters, which "
            "Secrets Manager takes for the suffix of a secret's ARN; rename the secret"
        )
    return EnvironmentConfig(
        name=name,
        profile=profile,
        cost_center=raw.text("costCenter"),
        monthly_budget_usd=raw.positive("monthlyBudgetUsd"),
        webhook_secret_name=webhook_secret_name,
        webhook_format=raw.choice("webhookFormat", WebhookFormat, WebhookFormat.SLACK),
        account=raw.text("account", None, ACCOUNT_ID, "a 12-digit AWS account id"),
        region=raw.text("region", None, REGION_NAME, "an AWS region such as eu-west-1"),
        alert_emails=raw.strings("alertEmails", _EMAIL, "an e-mail address"),
        report_emails=raw.strings("reportEmails", _EMAIL, "an e-mail address"),
        pipelines=raw.strings("pipelines"),
        include_stage_events=raw.flag("includeStageEvents"),
        include_action_events=raw.flag("includeActionEvents"),
        backup=_backup(raw.child("backup", [*_SCHEDULE_KEYS, "retentionDays"])),
        snapshot_cleanup=_snapshot_cleanup(
            raw.child(
                "snapshotCleanup",
                [*_SCHEDULE_KEYS, "retentionDays", "scope", "minKeepPerVolume", "dryRun"],
            )
        ),
        environment_scheduler=_environment_scheduler(
            raw.child("environmentScheduler", [*_SCHEDULER_TIMES, "ebsKeyArns"]), profile
        ),
        log_processor=_log_processor(
            raw.child(
                "logProcessor",
                [
                    "logGroups",
                    "watchStackFunctions",
                    "filterPattern",
                    "errorPatterns",
                    "criticalPatterns",
                    "alertWindowMinutes",
                ],
            )
        ),
        user_service=(
            _user_service(
                raw.child("userService", _USER_SERVICE_KEYS), profile, raw.raw.get("region")
            )
            if "userService" in raw.raw
            else None
        ),
        packaging=_packaging(raw.child("packaging", function_names())),
    )


def _packaging(raw: Reader) -> dict[str, Packaging]:
    return {name: raw.choice(name, Packaging, Packaging.ZIP) for name in sorted(raw.raw)}


def _backup(raw: Reader) -> BackupConfig:
    defaults = BackupConfig()
    return BackupConfig(
        schedule=raw.schedule(defaults.schedule),
        retention_days=raw.whole("retentionDays", defaults.retention_days, 1),
    )


def _snapshot_cleanup(raw: Reader) -> SnapshotCleanupConfig:
    defaults = SnapshotCleanupConfig()
    return SnapshotCleanupConfig(
        schedule=raw.schedule(defaults.schedule),
        retention_days=raw.whole("retentionDays", defaults.retention_days, 1),
        scope=raw.choice("scope", CleanupScope, defaults.scope),
        min_keep_per_volume=raw.whole("minKeepPerVolume", defaults.min_keep_per_volume, 0),
        dry_run=raw.flag("dryRun", defaults.dry_run),
    )


def _log_processor(raw: Reader) -> LogProcessorConfig:
    defaults = LogProcessorConfig()
    filter_pattern = raw.text("filterPattern", None)
    if filter_pattern is not None and len(filter_pattern) > 1024:
        raise raw.wrong(
            "filterPattern", "a CloudWatch Logs filter pattern of at most 1024 characters"
        )
    return LogProcessorConfig(
        log_groups=raw.strings("logGroups", _LOG_GROUP, "a CloudWatch Logs log group name"),
        watch_stack_functions=raw.flag("watchStackFunctions", defaults.watch_stack_functions),
        filter_pattern=filter_pattern,
        error_patterns=raw.regexes("errorPatterns"),
        critical_patterns=raw.regexes("criticalPatterns"),
        alert_window_minutes=raw.whole(
            "alertWindowMinutes", defaults.alert_window_minutes, 1, 1440
        ),
    )


_USER_SERVICE_KEYS = (
    "sesSender",
    "sesConfigurationSet",
    "allowedOrigins",
    "throttling",
    "accountLoggingRole",
    "senderConcurrency",
    "reserveSenderConcurrency",
    "userCountSource",
    "cognitoEmail",
    "firewall",
)


COGNITO_SHARED_SES_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
"""The SES regions Cognito lets user pools of some other regions use; a pool's own region
always works (Cognito's table of SES regions per user-pool region)."""


def _user_service(
    raw: Reader, profile: EnvironmentProfile, region: str | None
) -> UserServiceConfig:
    defaults = UserServiceConfig(ses_sender="")
    origins = raw.strings(
        "allowedOrigins", _ORIGIN, "'*' or an origin such as https://app.example.com"
    )
    if "*" in origins and not profile.allow_wildcard_cors:
        raise raw.error(
            f"{raw.name('allowedOrigins')} has '*', which profile {profile.name!r} does not "
            "allow; list the origins"
        )
    if "*" in origins and len(origins) > 1:
        raise raw.error(f"{raw.name('allowedOrigins')} lists '*' with other origins")
    throttling = raw.child("throttling", ["rateLimit", "burstLimit"])
    source = raw.text("userCountSource", defaults.user_count_source)
    if source not in USER_COUNT_SOURCES:
        raise raw.error(
            f"{raw.name('userCountSource')} {source!r} is not one of "
            f"{', '.join(USER_COUNT_SOURCES)}"
        )
    ses_region, identity = None, "address"
    if "cognitoEmail" in raw.raw:
        cognito = raw.child("cognitoEmail", ["sesRegion", "verifiedIdentity"])
        identity = cognito.text("verifiedIdentity", "address")
        ses_region = cognito.text(
            "sesRegion", pattern=REGION_NAME, what="an AWS region such as eu-west-1"
        )
        if region and ses_region not in (region, *COGNITO_SHARED_SES_REGIONS):
            raise cognito.error(
                f"{cognito.name('sesRegion')} {ses_region!r} cannot send for a user pool in "
                f"{region}: use {region} (or, where Cognito allows, one of "
                f"{', '.join(COGNITO_SHARED_SES_REGIONS)})"
            )
        if identity not in ("address", "domain"):
            raise cognito.error(
                f"{cognito.name('verifiedIdentity')} {identity!r} is not one of address, domain"
            )
    return UserServiceConfig(
        firewall=_firewall(
            raw.child("firewall", ["requestsPerClient", "windowSeconds", "countManagedRules"])
        )
        if "firewall" in raw.raw
        else None,
        cognito_ses_region=ses_region,
        cognito_ses_domain_identity=identity == "domain",
        ses_sender=raw.text("sesSender", pattern=SENDER_ADDRESS, what="one plain e-mail address"),
        ses_configuration_set=raw.text(
            "sesConfigurationSet",
            None,
            _SES_CONFIGURATION_SET,
            "an SES configuration set name (letters, digits, '-', '_'; at most 64)",
        ),
        allowed_origins=origins,
        rate_limit=throttling.whole("rateLimit", defaults.rate_limit, 1, 10_000),
        burst_limit=throttling.whole("burstLimit", defaults.burst_limit, 1, 5_000),
        account_logging_role=raw.flag("accountLoggingRole", defaults.account_logging_role),
        sender_concurrency=raw.whole("senderConcurrency", defaults.sender_concurrency, 2, 1000),
        reserve_sender_concurrency=raw.flag(
            "reserveSenderConcurrency", defaults.reserve_sender_concurrency
        ),
        user_count_source=source,
    )


def _firewall(raw: Reader) -> ApiFirewall:
    defaults = ApiFirewall()
    window = raw.whole("windowSeconds", defaults.window_seconds, 60, 600)
    if window not in EVALUATION_WINDOWS:
        raise raw.wrong("windowSeconds", f"one of {', '.join(map(str, EVALUATION_WINDOWS))}")
    return ApiFirewall(
        requests_per_client=raw.whole(
            "requestsPerClient", defaults.requests_per_client, 10, 2_000_000_000
        ),
        window_seconds=window,
        count_managed_rules=raw.flag("countManagedRules", defaults.count_managed_rules),
    )


_SCHEDULER_TIMES = {
    "timeZone": "time_zone",
    "weekDays": "week_days",
    "scaleDownAt": "scale_down_at",
    "scaleUpAt": "scale_up_at",
    "reportDay": "report_day",
    "reportAt": "report_at",
}
_SCALING_KEYS = ("weekDays", "scaleDownAt", "scaleUpAt", "ebsKeyArns")
"""Keys that mean something only where the profile scales down off-hours."""


def _environment_scheduler(raw: Reader, profile: EnvironmentProfile) -> EnvironmentSchedulerConfig:
    if not profile.scale_down_off_hours:
        useless = [key for key in _SCALING_KEYS if key in raw.raw]
        if useless:
            raise raw.error(
                f"{raw.name(useless[0])} has no effect: profile {profile.name!r} does not "
                "scale down off-hours"
            )
    formats = {
        "weekDays": (WEEK_DAYS, "days such as MON-FRI or MON,WED,FRI"),
        "reportDay": (WEEK_DAY, "one of SUN, MON, TUE, WED, THU, FRI, SAT"),
        "scaleDownAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
        "scaleUpAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
        "reportAt": (TIME_OF_DAY, "a 24-hour HH:MM time"),
    }
    values: dict[str, Any] = {
        _SCHEDULER_TIMES[key]: raw.text(key, None, pattern, what)
        for key, (pattern, what) in formats.items()
        if key in raw.raw
    }
    if "timeZone" in raw.raw:
        values["time_zone"] = TimeZone.of(raw.time_zone("timeZone", "Etc/UTC"))
    times = SchedulerTimes(**values)
    if times.scale_down_at == times.scale_up_at:
        raise raw.error(f"{raw.name('scaleDownAt')} and 'scaleUpAt' are both {times.scale_up_at}")
    return EnvironmentSchedulerConfig(
        times=times,
        ebs_key_arns=raw.strings("ebsKeyArns", _KMS_KEY_ARN, "a KMS key ARN"),
    )
