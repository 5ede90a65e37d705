"""One environment's opskit stack, composed from its config."""

from __future__ import annotations

from aws_cdk import Duration, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from opskit import DeploymentNotifier, LogProcessor, Monitoring, MonthlyBudget
from stacks.config import EnvironmentConfig

PROJECT = "cdk-opskit"


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
            budget_name=f"opskit-{config.name}-monthly",
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
        # Last, so that it can watch every function composed above.
        self.log_processor = LogProcessor(
            self,
            "LogProcessor",
            profile=profile,
            monitoring=self.monitoring,
            log_groups=config.log_groups,
            filter_pattern=(
                logs.FilterPattern.literal(config.log_filter_pattern)
                if config.log_filter_pattern
                else None
            ),
            error_patterns=config.error_patterns,
            critical_patterns=config.critical_patterns,
            alert_window=Duration.minutes(config.alert_window_minutes),
        )
        if config.watch_stack_functions:
            self.log_processor.watch_functions(self)
