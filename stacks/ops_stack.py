"""One environment's opskit stack, composed from its config."""

from __future__ import annotations

from aws_cdk import Environment, RemovalPolicy, Stack, Tags, TimeZone
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from opskit import BackupAutomation, DeploymentNotifier, Monitoring, MonthlyBudget
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
        self.backup = BackupAutomation(
            self,
            "Backup",
            profile=profile,
            monitoring=self.monitoring,
            environment_name=config.name,
            retention_days=config.backup_retention_days,
            schedule=scheduler.ScheduleExpression.expression(
                config.backup_schedule, TimeZone.of(config.backup_time_zone)
            ),
            schedule_enabled=config.backup_enabled,
        )
