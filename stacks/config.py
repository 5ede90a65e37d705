"""The `environments` map and the `pipeline` entry of cdk.json, read into typed, validated values.

Every problem raises `ConfigError` with one line that names the environment (or
`pipeline`), the key and what would be valid, so `cdk synth` can print it and exit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from opskit import BUILT_IN_PROFILES, EnvironmentProfile, OpsKitError, ProfileError, WebhookFormat

DEFAULT_ENVIRONMENT = "dev"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


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
    verifier_account: str | None = None
    """Another account whose principals may invoke the smoke-tested aliases: the delivery
    pipeline's, when it verifies this environment from there."""


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
    )


_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[\w-]+$"
)
_REPOSITORY = re.compile(r"^[\w.-]+(/[\w.-]+)+$")
_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9.@_-]{1,100}$")


@dataclass(frozen=True)
class PipelineConfig:
    """The cdk.json `pipeline` entry: the delivery pipeline, its source and its stages."""

    name: str
    account: str
    region: str
    connection_arn: str
    repository: str
    branch: str
    stages: tuple[str, ...]
    """Environments in promotion order."""
    approval_before: frozenset[str]
    verify_after: frozenset[str]
    notifier_environment: str | None
    """The environment whose deployment notifier reports this pipeline."""
    environments: dict[str, Any] = field(repr=False, compare=False)
    """The cdk.json environments map the stages come from."""

    def target(self, config: EnvironmentConfig) -> tuple[str, str]:
        """Where the environment deploys: its own account and region, else the pipeline's."""
        return config.account or self.account, config.region or self.region

    def stage_config(self, name: str) -> EnvironmentConfig:
        """The environment's config as this pipeline deploys and verifies it."""
        return with_pipeline(load_environment(self.environments, name), self)

    @property
    def cross_account(self) -> bool:
        """Whether a stage deploys to another account, which needs KMS-encrypted artifacts."""
        return any(
            self.target(load_environment(self.environments, name))[0] != self.account
            for name in self.stages
        )


_PIPELINE_KEYS = frozenset(
    {
        "name",
        "account",
        "region",
        "connectionArn",
        "repository",
        "branch",
        "stages",
        "approvalBefore",
        "verifyAfter",
        "notifierEnvironment",
    }
)
_PIPELINE_REQUIRED = ("account", "region", "connectionArn", "repository", "stages")
DEFAULT_PIPELINE_NAME = "opskit"


def load_pipeline(raw: Any, environments: Any) -> PipelineConfig:
    """The cdk.json `pipeline` entry, checked against the environments it promotes through.

    Defaults: `name` opskit, `branch` main, an approval before the last stage, a
    verification after each stage that precedes an approval.
    """
    where = "pipeline"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _PIPELINE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_PIPELINE_KEYS))}"
        )
    missing = [key for key in _PIPELINE_REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")

    def text(key: str, pattern: re.Pattern[str], what: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not pattern.match(value):
            raise ConfigError(f"{where}: {key!r} must be {what}, got {value!r}")
        return value

    if not isinstance(environments, dict) or not environments:
        raise ConfigError('cdk.json context has no "environments" map of environment names')
    names = sorted(environments)

    def environment_names(key: str, default: list[str]) -> tuple[str, ...]:
        values = raw.get(key, default)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(
                f"{where}: {key!r} must be a list of environment names, got {values!r}"
            )
        for value in values:
            if value not in names:
                raise ConfigError(
                    f"{where}: {key!r} names {value!r}, which is not an environment; "
                    f"valid choices: {', '.join(names)}"
                )
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{where}: {key!r} lists {repeated[0]!r} more than once")
        return tuple(values)

    stages = environment_names("stages", [])
    if not stages:
        raise ConfigError(f"{where}: 'stages' must name at least one environment")

    def stage_names(key: str, default: list[str]) -> frozenset[str]:
        chosen = environment_names(key, default)
        outside = [name for name in chosen if name not in stages]
        if outside:
            raise ConfigError(
                f"{where}: {key!r} names {outside[0]!r}, which is not one of the stages "
                f"{', '.join(stages)}"
            )
        return frozenset(chosen)

    approval_before = stage_names("approvalBefore", [stages[-1]])
    verify_after = stage_names(
        "verifyAfter",
        [stages[i - 1] for i, name in enumerate(stages) if i and name in approval_before],
    )
    pipeline = PipelineConfig(
        name=text(
            "name", _PIPELINE_NAME, "1-100 letters, digits or . @ _ -", DEFAULT_PIPELINE_NAME
        ),
        account=text("account", _ACCOUNT, "a 12-digit AWS account id"),
        region=text("region", _REGION, "an AWS region such as eu-west-1"),
        connection_arn=text(
            "connectionArn",
            _CONNECTION_ARN,
            "the ARN of a CodeConnections (CodeStar) connection",
        ),
        repository=text("repository", _REPOSITORY, "owner/name of the source repository"),
        branch=text("branch", re.compile(r"^\S+$"), "a branch name", "main"),
        stages=stages,
        approval_before=approval_before,
        verify_after=verify_after,
        notifier_environment=None,
        environments=environments,
    )
    for name in stages:
        region = pipeline.target(load_environment(environments, name))[1]
        if region != pipeline.region:
            raise ConfigError(
                f"{where}: stage {name!r} deploys to {region}, but the pipeline is in "
                f"{pipeline.region}; stages in other regions are not supported (CDK Pipelines "
                "would add replication stacks and grant KMS on every key)"
            )
    return replace(pipeline, notifier_environment=_notifier_environment(raw, pipeline))


def _notifier_environment(raw: dict[str, Any], pipeline: PipelineConfig) -> str | None:
    """The environment in the pipeline's account and region whose notifier reports it.

    CodePipeline emits its events in its own account and region, so only a notifier
    deployed there can see them.
    """
    home = (pipeline.account, pipeline.region)
    configs = {
        name: load_environment(pipeline.environments, name) for name in pipeline.environments
    }
    at_home = sorted(name for name, config in configs.items() if pipeline.target(config) == home)
    chosen = raw.get("notifierEnvironment")
    if chosen is None:
        if len(at_home) > 1:
            raise ConfigError(
                f"pipeline: environments {', '.join(at_home)} all deploy to the pipeline's "
                f"account and region; set 'notifierEnvironment' to the one whose deployment "
                "notifier reports this pipeline"
            )
        return at_home[0] if at_home else None
    if chosen not in configs:
        raise ConfigError(
            f"pipeline: 'notifierEnvironment' names {chosen!r}, which is not an environment; "
            f"valid choices: {', '.join(sorted(configs))}"
        )
    if chosen not in at_home:
        account, region = pipeline.target(configs[chosen])
        raise ConfigError(
            f"pipeline: 'notifierEnvironment' {chosen!r} deploys to {account}/{region}, where "
            f"the pipeline's events ({pipeline.account}/{pipeline.region}) never arrive"
        )
    return str(chosen)


def with_pipeline(config: EnvironmentConfig, pipeline: PipelineConfig | None) -> EnvironmentConfig:
    """The environment as the delivery pipeline needs it, deployed by hand or by the pipeline.

    Its notifier also reports the pipeline when it is the pipeline's notifier environment
    and watches named pipelines (an empty list already watches every one); the pipeline's
    account may invoke its smoke-tested aliases when it verifies the environment from
    another account.
    """
    if pipeline is None:
        return config
    pipelines = config.pipelines
    if (
        config.name == pipeline.notifier_environment
        and pipelines
        and pipeline.name not in pipelines
    ):
        pipelines = (*pipelines, pipeline.name)
    verifier = None
    if config.name in pipeline.verify_after and pipeline.target(config)[0] != pipeline.account:
        verifier = pipeline.account
    return replace(config, pipelines=pipelines, verifier_account=verifier)
