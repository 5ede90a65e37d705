"""The `pipeline` entry of cdk.json: the delivery pipeline, read into a typed, validated value.

It is checked against the environments it promotes through, with the same one-line errors
as the `environments` map (`pipeline: '<key>' must be ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from stacks.config import (
    ACCOUNT_ID,
    REGION_NAME,
    ConfigError,
    EnvironmentConfig,
    Reader,
    load_environment,
)

_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[\w-]+$"
)
_REPOSITORY = re.compile(r"^[\w.-]+(/[\w.-]+)+$")
_PIPELINE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
"""A CodePipeline name (at most 100) that also makes a stack name, `<name>-pipeline`:
CloudFormation allows letters, digits and hyphens there, starting with a letter."""
_BRANCH = re.compile(r"^\S+$")
DEFAULT_PIPELINE_NAME = "opskit"

_KEYS = (
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
)


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


def load_pipeline(raw: Any, environments: Any) -> PipelineConfig:
    """The cdk.json `pipeline` entry, checked against the environments it promotes through.

    Defaults: `name` opskit, `branch` main, an approval before the last stage, a
    verification after each stage that precedes an approval.
    """
    entry = Reader(raw, where="pipeline", path="", keys=_KEYS)
    if not isinstance(environments, dict) or not environments:
        raise ConfigError('cdk.json context has no "environments" map of environment names')
    names = sorted(environments)

    def environment_names(key: str, default: list[str]) -> tuple[str, ...]:
        values = entry.raw.get(key, default)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise entry.wrong(key, "a list of environment names")
        for value in values:
            if value not in names:
                raise entry.error(
                    f"{entry.name(key)} names {value!r}, which is not an environment; "
                    f"valid choices: {', '.join(names)}"
                )
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise entry.error(f"{entry.name(key)} lists {repeated[0]!r} more than once")
        return tuple(values)

    stages = environment_names("stages", [])
    if not stages:
        raise entry.error("'stages' must name at least one environment")

    def stage_names(key: str, default: list[str]) -> frozenset[str]:
        chosen = environment_names(key, default)
        outside = [name for name in chosen if name not in stages]
        if outside:
            raise entry.error(
                f"{entry.name(key)} names {outside[0]!r}, which is not one of the stages "
                f"{', '.join(stages)}"
            )
        return frozenset(chosen)

    approval_before = stage_names("approvalBefore", [stages[-1]])
    verify_after = stage_names(
        "verifyAfter",
        [stages[i - 1] for i, name in enumerate(stages) if i and name in approval_before],
    )
    pipeline = PipelineConfig(
        name=entry.text(
            "name",
            DEFAULT_PIPELINE_NAME,
            _PIPELINE_NAME,
            "a letter, then up to 99 letters, digits or hyphens",
        ),
        account=entry.text("account", pattern=ACCOUNT_ID, what="a 12-digit AWS account id"),
        region=entry.text("region", pattern=REGION_NAME, what="an AWS region such as eu-west-1"),
        connection_arn=entry.text(
            "connectionArn",
            pattern=_CONNECTION_ARN,
            what="the ARN of a CodeConnections (CodeStar) connection",
        ),
        repository=entry.text(
            "repository", pattern=_REPOSITORY, what="owner/name of the source repository"
        ),
        branch=entry.text("branch", "main", _BRANCH, "a branch name"),
        stages=stages,
        approval_before=approval_before,
        verify_after=verify_after,
        notifier_environment=None,
        environments=environments,
    )
    for name in stages:
        region = pipeline.target(load_environment(environments, name))[1]
        if region != pipeline.region:
            raise entry.error(
                f"stage {name!r} deploys to {region}, but the pipeline is in "
                f"{pipeline.region}; stages in other regions are not supported (CDK Pipelines "
                "would add replication stacks and grant KMS on every key)"
            )
    return replace(pipeline, notifier_environment=_notifier_environment(entry, pipeline))


def _notifier_environment(entry: Reader, pipeline: PipelineConfig) -> str | None:
    """The environment in the pipeline's account and region whose notifier reports it.

    CodePipeline emits its events in its own account and region, so only a notifier
    deployed there can see them.
    """
    home = (pipeline.account, pipeline.region)
    configs = {
        name: load_environment(pipeline.environments, name) for name in pipeline.environments
    }
    at_home = sorted(name for name, config in configs.items() if pipeline.target(config) == home)
    chosen = (
        None if entry.raw.get("notifierEnvironment") is None else entry.text("notifierEnvironment")
    )
    if chosen is None:
        if len(at_home) > 1:
            raise entry.error(
                f"environments {', '.join(at_home)} all deploy to the pipeline's account and "
                "region; set 'notifierEnvironment' to the one whose deployment notifier "
                "reports this pipeline"
            )
        return at_home[0] if at_home else None
    if chosen not in configs:
        raise entry.error(
            f"'notifierEnvironment' names {chosen!r}, which is not an environment; "
            f"valid choices: {', '.join(sorted(configs))}"
        )
    if chosen not in at_home:
        account, region = pipeline.target(configs[chosen])
        raise entry.error(
            f"'notifierEnvironment' {chosen!r} deploys to {account}/{region}, where "
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
