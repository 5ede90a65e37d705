"""Everything that differs between environments, in one typed value.

Constructs take an `EnvironmentProfile` and read its fields; they never test
an environment's name. Use a built-in profile (`DEV`, `STAGING`, `PROD`), or
`dataclasses.replace` one to make your own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from aws_cdk import RemovalPolicy
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_logs as logs

from opskit.errors import ProfileError


class DeploymentStrategy(Enum):
    """How CodeDeploy shifts traffic from the old version of a function to the new one."""

    ALL_AT_ONCE = "all-at-once"
    LINEAR_10_PERCENT_EVERY_MINUTE = "linear-10-percent-every-minute"
    CANARY_10_PERCENT_5_MINUTES = "canary-10-percent-5-minutes"

    def deployment_config(self) -> codedeploy.ILambdaDeploymentConfig:
        return getattr(  # type: ignore[no-any-return]
            codedeploy.LambdaDeploymentConfig, _DEPLOYMENT_CONFIGS[self]
        )


_DEPLOYMENT_CONFIGS = {
    DeploymentStrategy.ALL_AT_ONCE: "ALL_AT_ONCE",
    DeploymentStrategy.LINEAR_10_PERCENT_EVERY_MINUTE: "LINEAR_10_PERCENT_EVERY_1_MINUTE",
    DeploymentStrategy.CANARY_10_PERCENT_5_MINUTES: "CANARY_10_PERCENT_5_MINUTES",
}
"""By name: each of CodeDeploy's configs is a round trip to the jsii runtime to fetch."""


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


@dataclass(frozen=True)
class EnvironmentProfile:
    """Per-environment behaviour of every opskit construct."""

    name: str
    """Lower-case environment name (`dev`); the alias of every function is its upper case."""
    log_retention: logs.RetentionDays
    """How long log groups keep events; never infinite."""
    removal_policy: RemovalPolicy
    """What happens to stateful resources (logs, queues, tables, keys) when they leave the stack."""
    point_in_time_recovery: bool
    """Whether DynamoDB tables keep continuous backups."""
    alarm_actions_enabled: bool
    """Whether alarms notify the alert topics (they always change state)."""
    schedules_enabled: bool
    """Whether schedules start enabled; a capability may override this for its own schedules."""
    deployment_strategy: DeploymentStrategy
    """How new function versions receive traffic."""
    log_level: str = "INFO"
    """Application log level of every function."""
    tracing: bool = True
    """Whether functions trace with X-Ray (active tracing)."""
    encrypt_logs: bool = False
    """Whether log groups are encrypted with a customer-managed KMS key (CloudWatch Logs
    always encrypts at rest; a key of your own adds control, audit and cost)."""
    encrypt_data: bool = False
    """Whether DynamoDB tables and Secrets Manager secrets are encrypted with a
    customer-managed KMS key, one per stack, instead of the AWS managed keys (they are always
    encrypted at rest; a key of your own adds a key policy, audit and $1 a month)."""
    api_data_tracing: bool = False
    """Whether API Gateway logs full request and response bodies: users' e-mail addresses
    and names land in the execution logs, so only dev does."""
    reserved_concurrency: int | None = None
    """Default reserved concurrency per function (None: the account's unreserved pool)."""
    provisioned_concurrency: int | None = None
    """Default provisioned concurrency on every alias (None: on demand)."""
    scale_down_off_hours: bool = False
    """Whether the environment scheduler may stop this environment's instances and scale its
    Auto Scaling groups to zero out of hours (off: it only reports on them)."""
    deletion_protection: bool = False
    """Whether tables and user pools refuse deletion (by a stack update or by hand) until it is
    turned off; independent of `removal_policy`, which decides what a stack deletion does."""
    allow_wildcard_cors: bool = False
    """Whether an API may allow any origin (`*`) for CORS; off, only listed origins."""
    business_metrics: bool = False
    """Whether jobs that publish business figures (such as user counts) run on their schedules."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ProfileError(
                f"profile name {self.name!r} must be 1-20 lower-case letters, digits or '-', "
                "starting with a letter"
            )
        if self.log_retention == logs.RetentionDays.INFINITE:
            raise ProfileError(f"profile {self.name!r}: log retention must not be infinite")
        if self.log_level not in LOG_LEVELS:
            raise ProfileError(
                f"profile {self.name!r}: log level {self.log_level!r} is not one of "
                f"{', '.join(LOG_LEVELS)}"
            )
        for knob in ("reserved_concurrency", "provisioned_concurrency"):
            value = getattr(self, knob)
            if value is not None and value < 0:
                raise ProfileError(f"profile {self.name!r}: {knob} must be >= 0, got {value}")

    @property
    def alias_name(self) -> str:
        """The alias every invoker targets: the environment's name in upper case."""
        return self.name.upper()


DEV = EnvironmentProfile(
    name="dev",
    log_retention=logs.RetentionDays.ONE_WEEK,
    removal_policy=RemovalPolicy.DESTROY,
    point_in_time_recovery=False,
    alarm_actions_enabled=False,
    schedules_enabled=False,
    deployment_strategy=DeploymentStrategy.ALL_AT_ONCE,
    log_level="DEBUG",
    api_data_tracing=True,
    scale_down_off_hours=True,
    allow_wildcard_cors=True,
)

STAGING = EnvironmentProfile(
    name="staging",
    log_retention=logs.RetentionDays.TWO_WEEKS,
    removal_policy=RemovalPolicy.DESTROY,
    point_in_time_recovery=False,
    alarm_actions_enabled=True,
    schedules_enabled=True,
    deployment_strategy=DeploymentStrategy.LINEAR_10_PERCENT_EVERY_MINUTE,
    scale_down_off_hours=True,
)

PROD = EnvironmentProfile(
    name="prod",
    log_retention=logs.RetentionDays.ONE_MONTH,
    removal_policy=RemovalPolicy.RETAIN,
    point_in_time_recovery=True,
    alarm_actions_enabled=True,
    schedules_enabled=True,
    deployment_strategy=DeploymentStrategy.CANARY_10_PERCENT_5_MINUTES,
    encrypt_logs=True,
    encrypt_data=True,
    deletion_protection=True,
    business_metrics=True,
)

BUILT_IN_PROFILES: dict[str, EnvironmentProfile] = {p.name: p for p in (DEV, STAGING, PROD)}
