"""One environment's opskit stack, composed from its config."""

from __future__ import annotations

from aws_cdk import Environment, RemovalPolicy, Stack, Tags
from constructs import Construct

from opskit import DeploymentNotifier, Monitoring, MonthlyBudget
from stacks.config import EnvironmentConfig
from stacks.verification import allow_invocation_from, verification_targets

PROJECT = "cdk-opskit"


def compose_environment(scope: Construct, config: EnvironmentConfig) -> OpsKitStack:
    """The stacks of one environment, into an app (`--context environment=<name>`) or into
    the delivery pipeline's stage for it: one composition, so both deploy the same templates.

    Each smoke-tested function's ARN becomes a stack output, which the pipeline's
    verification step reads back after deploying the stage.
    """
    stack = OpsKitStack(scope, config)
    targets = verification_targets(stack)
    if config.verifier_account is not None:
        allow_invocation_from(targets, config.verifier_account)
    return stack


class OpsKitStack(Stack):
    """Monitoring, the cost budget and every capability of one environment.

    One stack per environment keeps `cdk deploy --context environment=prod`
    free of stack selection, and lets the dashboard reference every function
    without cross-stack cycles.
    """

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(
            scope,
            f"OpsKit-{config.name}",
            stack_name=f"opskit-{config.name}",
            description=f"cdk-opskit operational functions ({config.name})",
            env=(
                Environment(account=config.account, region=config.region)
                if config.account or config.region
                else None
            ),
            termination_protection=config.profile.removal_policy is RemovalPolicy.RETAIN,
        )
        self.config = config
        for key, value in {
            "Project": PROJECT,
            "Environment": config.name,
            "ManagedBy": "aws-cdk",
            "CostCenter": config.cost_center,
        }.items():
            Tags.of(self).add(key, value)

        profile = config.profile
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            profile=profile,
            alert_emails=config.alert_emails,
            report_emails=config.report_emails,
        )
        self.budget = MonthlyBudget(
            self,
            "Budget",
            amount_usd=config.monthly_budget_usd,
            topic=self.monitoring.warning_topic,
            budget_name_prefix=f"opskit-{config.name}-monthly",
            cost_tags={"Project": PROJECT, "Environment": config.name},
        )
        self.deployment_notifier = DeploymentNotifier(
            self,
            "DeploymentNotifier",
            profile=profile,
            monitoring=self.monitoring,
            webhook_secret_name=config.webhook_secret_name,
            webhook_format=config.webhook_format,
            pipelines=config.pipelines,
            include_stage_events=config.include_stage_events,
            include_action_events=config.include_action_events,
        )
