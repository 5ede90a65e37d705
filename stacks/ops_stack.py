"""One environment's opskit stack, composed from its config."""

from __future__ import annotations

from aws_cdk import Duration, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from opskit import (
    PACKAGING_CONTEXT,
    ApiThrottling,
    BackupAutomation,
    DeploymentNotifier,
    EnvironmentScheduler,
    LogProcessor,
    Monitoring,
    MonthlyBudget,
    SnapshotCleanup,
    UserService,
)
from stacks.config import EnvironmentConfig, UserServiceConfig
from stacks.verification import allow_invocation_from, verification_targets

PROJECT = "cdk-opskit"


def cognito_email(users: UserServiceConfig) -> cognito.UserPoolEmail | None:
    """SES, from the service's sender, where config names the region; else Cognito's own."""
    if users.cognito_ses_region is None:
        return None
    domain = users.ses_sender.rsplit("@", 1)[1] if users.cognito_ses_domain_identity else None
    return cognito.UserPoolEmail.with_ses(
        from_email=users.ses_sender,
        ses_region=users.cognito_ses_region,
        ses_verified_domain=domain,
    )


def compose_environment(scope: Construct, config: EnvironmentConfig) -> OpsKitStack:
    """The stacks of one environment, into an app (`--context environment=<name>`) or into
    the delivery pipeline's stage for it: one composition, so both deploy the same templates.

    Each smoke-tested function's name is listed in a stack output, which the pipeline's
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
        if config.packaging:  # read by every OpsFunction below, so set before any is added
            self.node.set_context(
                PACKAGING_CONTEXT, {name: kind.value for name, kind in config.packaging.items()}
            )
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
        self.deployment_notifier.forward_alarms(self.monitoring.undelivered_alerts_alarm)
        self.backup = BackupAutomation(
            self,
            "Backup",
            profile=profile,
            monitoring=self.monitoring,
            environment_name=config.name,
            retention_days=config.backup.retention_days,
            schedule=config.backup.schedule.schedule_expression(),
            schedule_enabled=config.backup.schedule.enabled,
        )
        cleanup = config.snapshot_cleanup
        self.snapshot_cleanup = SnapshotCleanup(
            self,
            "SnapshotCleanup",
            profile=profile,
            monitoring=self.monitoring,
            retention_days=cleanup.retention_days,
            cleanup_scope=cleanup.scope,
            min_keep_per_volume=cleanup.min_keep_per_volume,
            schedule=cleanup.schedule.schedule_expression(),
            schedule_enabled=cleanup.schedule.enabled,
            dry_run=cleanup.dry_run,
        )
        self.environment_scheduler = EnvironmentScheduler(
            self,
            "EnvironmentScheduler",
            profile=profile,
            monitoring=self.monitoring,
            times=config.environment_scheduler.times,
            ebs_encryption_keys=[
                kms.Key.from_key_arn(self, f"SchedulerEbsKey{n}", arn)
                for n, arn in enumerate(config.environment_scheduler.ebs_key_arns)
            ],
        )
        self.user_service: UserService | None = None
        users = config.user_service
        if users is not None:
            self.user_service = UserService(
                self,
                "UserService",
                profile=profile,
                monitoring=self.monitoring,
                ses_sender=users.ses_sender,
                ses_configuration_set=users.ses_configuration_set,
                allowed_origins=users.allowed_origins,
                throttling=ApiThrottling(
                    rate_limit=users.rate_limit, burst_limit=users.burst_limit
                ),
                manage_account_logging_role=users.account_logging_role,
                sender_concurrency=users.sender_concurrency,
                reserve_sender_concurrency=users.reserve_sender_concurrency,
                user_count_source=users.user_count_source,
                user_pool_email=cognito_email(users),
                firewall=users.firewall,
            )
        # Last, so that it can watch every function composed above.
        watching = config.log_processor
        self.log_processor = LogProcessor(
            self,
            "LogProcessor",
            profile=profile,
            monitoring=self.monitoring,
            log_groups=watching.log_groups,
            filter_pattern=(
                logs.FilterPattern.literal(watching.filter_pattern)
                if watching.filter_pattern
                else None
            ),
            error_patterns=watching.error_patterns,
            critical_patterns=watching.critical_patterns,
            alert_window=Duration.minutes(watching.alert_window_minutes),
        )
        if watching.watch_stack_functions:
            self.log_processor.watch_functions(self)
