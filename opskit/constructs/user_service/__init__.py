"""UserService: the user REST API behind Cognito, its data, its event pipeline and metrics job.

Split by job: `data.py` (tables, page-token secret), `api.py` (user pool, REST API),
`pipeline.py` (topic, queues, processor and sender), `openapi.py` (what the API's
routes and models are, read from the handler's OpenAPI document); this module composes
them with the API and metrics functions, the alarms and the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.alarms import Severity, Thresholds, create_alarms
from opskit.constructs.compliance import acknowledge
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.monitoring import METRIC_PERIOD, Monitoring
from opskit.constructs.ops_function import AlarmThresholds, OpsFunction, ScheduleOptions
from opskit.constructs.paths import display_path
from opskit.constructs.user_service.api import ApiThrottling, UserApi, validated_origins
from opskit.constructs.user_service.data import CREATED_INDEX, EMAIL_INDEX, UserData
from opskit.constructs.user_service.firewall import ApiFirewall
from opskit.constructs.user_service.pipeline import SMOKE_TEST_EVENT, UserEvents, validate
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

__all__ = ["ApiFirewall", "ApiThrottling", "UserService", "UserServiceThresholds"]

DEFAULT_METRICS_NAMESPACE = "OpsKit/Users"
USER_COUNT_SOURCES = ("describe", "scan")
API_TIMEOUT = Duration.seconds(10)


@dataclass(frozen=True)
class UserServiceThresholds:
    """Alarm thresholds of the service by severity (leave one out to drop that alarm); every
    alarm reads five-minute periods of this environment's own API stage, table or queue."""

    server_error_rate_percent: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 1, Severity.CRITICAL: 5}
    )
    """API responses with a 5XX status, as a percentage of requests."""
    client_errors: Thresholds = field(default_factory=lambda: {Severity.WARNING: 100})
    """API responses with a 4XX status (a broken client, or someone probing)."""
    rate_limited_requests: Thresholds = field(default_factory=lambda: {Severity.WARNING: 100})
    """Requests the firewall's per-client rate limit answered 429 (where there is a firewall):
    an abusive client, or a legitimate one that needs a higher limit."""
    latency_p99_ms: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 1000, Severity.CRITICAL: 3000}
    )
    """p99 of API Gateway's latency (ms), for 2 of 3 periods."""
    read_throttles: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 1, Severity.CRITICAL: 50}
    )
    """Throttled reads of the users table and its indexes."""
    write_throttles: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 1, Severity.CRITICAL: 50}
    )
    """Throttled writes of the users table and its indexes."""
    email_age_seconds: Thresholds = field(
        default_factory=lambda: {Severity.WARNING: 300, Severity.CRITICAL: 1800}
    )
    """Age of the oldest message waiting in the e-mail queue."""


class UserService(Construct):
    """A REST API for users with unique e-mail addresses, and what it sets in motion.

    - `api` (API Gateway REST, stage `stage` named after the environment): every method
      behind the Cognito `user_pool`, bodies validated against the OpenAPI models, JSON
      access logs, execution logs, X-Ray, metrics, throttling, CORS for the allowed origins;
      it invokes `api_function` (`api.lambda_handler`).
    - `users_table` (users and e-mail guards, streams new and old images), `audit_table`,
      `page_token_secret`.
    - the event pipeline: `user_created_topic` -> `user_created_function` -> `email_queue`
      -> `email_sender_function` -> SES, with dead-letter queues at every hop.
    - `metrics_function`: hourly user counts to CloudWatch, scheduled where the profile
      runs business metrics.

    Alarms (`alarms`) cover the API's 5XX rate, 4XX count and p99 latency, table throttles,
    the e-mail queue's oldest message and, through each function, every dead-letter queue.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        ses_sender: str,
        monitoring: Monitoring | None = None,
        ses_configuration_set: str | None = None,
        allowed_origins: Sequence[str] = (),
        throttling: ApiThrottling | None = None,
        user_pool: cognito.IUserPool | None = None,
        mfa: cognito.Mfa = cognito.Mfa.OPTIONAL,
        self_sign_up: bool = False,
        user_pool_email: cognito.UserPoolEmail | None = None,
        feature_plan: cognito.FeaturePlan = cognito.FeaturePlan.ESSENTIALS,
        manage_account_logging_role: bool = True,
        execution_log_level: apigw.MethodLoggingLevel | None = None,
        web_acl_arn: str | None = None,
        firewall: ApiFirewall | None = None,
        api_name: str | None = None,
        sender_concurrency: int = 10,
        reserve_sender_concurrency: bool = True,
        metrics_namespace: str = DEFAULT_METRICS_NAMESPACE,
        user_count_source: str = "describe",
        metrics_schedule: scheduler.ScheduleExpression | None = None,
        thresholds: UserServiceThresholds | None = None,
        alarm_thresholds: AlarmThresholds | None = None,
    ) -> None:
        """
        :param profile: the environment's behaviour.
        :param ses_sender: the address every e-mail is sent from (FROM_EMAIL); it, or its
            domain, must be a verified SES identity in this account and region.
        :param monitoring: where alarms notify and widgets are drawn.
        :param ses_configuration_set: an existing SES configuration set for sending events.
            Default: none.
        :param allowed_origins: browser origins allowed by CORS (`https://app.example.com`);
            `*` only where the profile allows wildcard CORS. Default: none (no CORS).
        :param throttling: Default: 100 requests per second, burst 200.
        :param user_pool: an existing Cognito user pool for the authorizer. Default: a new
            pool (e-mail sign-in) with an app client without a secret.
        :param mfa: MFA of a new pool. Default: optional. CloudFormation cannot make MFA
            required on an existing pool: choose REQUIRED when creating it.
        :param self_sign_up: whether anyone may sign up to a new pool. Default: False
            (administrators invite users).
        :param user_pool_email: how a new pool sends e-mail. Default: Cognito's own sender,
            which sends at most 50 e-mails a day; use `UserPoolEmail.with_ses` beyond that.
        :param feature_plan: a new pool's feature plan. Default: Essentials; Plus adds
            threat protection (full function) at a price per user.
        :param manage_account_logging_role: set the account's API Gateway CloudWatch Logs
            role (needed for any API logging; see `UserApi`). Default: True; pass False
            where the account's landing zone sets it.
        :param execution_log_level: Default: INFO where the profile traces API data,
            ERROR elsewhere.
        :param web_acl_arn: an AWS WAF (regional) web ACL for the stage. Default: none.
        :param firewall: a web ACL of the stage's own instead (`firewall.py`): a per-client
            rate limit answered 429, and AWS's IP reputation and known-bad-inputs rules.
            Default: none.
        :param api_name: Default: `<stack name>-users`.
        :param sender_concurrency: how many e-mail batches are sent at once: the event
            source's maximum concurrency and the sender's reserved concurrency. Default: 10.
        :param reserve_sender_concurrency: reserve `sender_concurrency` for the sender.
            Lambda keeps 100 of the account's concurrency unreserved, so an account with a
            low quota refuses the reservation: pass False there. Default: True.
        :param metrics_namespace: where the metrics job publishes. Default: `OpsKit/Users`.
        :param user_count_source: `describe` (free, refreshed about every six hours) or
            `scan` (exact, reads the whole e-mail index every run). Default: `describe`.
        :param metrics_schedule: Default: every hour at five past (the hour before it
            has ended, and its index writes have settled).
        :param thresholds: the service's alarms. Default: `UserServiceThresholds()`.
        :param alarm_thresholds: every function's own alarms. Default: `AlarmThresholds()`.
        """
        super().__init__(scope, id)
        if user_count_source not in USER_COUNT_SOURCES:
            raise PropsError(
                f"{self.node.path}: user_count_source must be one of "
                f"{', '.join(USER_COUNT_SOURCES)}, got {user_count_source!r}"
            )
        self.profile = profile
        self.monitoring = monitoring
        self.thresholds = thresholds or UserServiceThresholds()
        self.metrics_namespace = metrics_namespace
        self.allowed_origins = validated_origins(
            allowed_origins, profile=profile, where=self.node.path
        )
        self.throttling = throttling or ApiThrottling()
        problem = self.throttling.problem() or (firewall and firewall.problem())
        if web_acl_arn is not None and firewall is not None:
            problem = "give web_acl_arn or firewall, not both (a stage takes one web ACL)"
        if problem:
            raise PropsError(f"{self.node.path}: {problem}")
        validate(
            self.node.path,
            ses_sender=ses_sender,
            ses_configuration_set=ses_configuration_set,
            sender_concurrency=sender_concurrency,
        )

        data = UserData(self, "Data", profile=profile)
        self.users_table = data.users_table
        self.audit_table = data.audit_table
        self.page_token_secret = data.page_token_secret

        events = UserEvents(
            self,
            "Events",
            profile=profile,
            monitoring=monitoring,
            audit_table=self.audit_table,
            ses_sender=ses_sender,
            ses_configuration_set=ses_configuration_set,
            sender_concurrency=sender_concurrency,
            reserve_sender_concurrency=reserve_sender_concurrency,
            alarm_thresholds=alarm_thresholds,
        )
        self.events = events
        self.user_created_topic = events.topic
        self.email_queue = events.email_queue
        self.email_dead_letter_queue = events.email_dead_letter_queue
        self.user_created_function = events.processor
        self.email_sender_function = events.sender

        layers = [common_layer(self), powertools_layer(self)]
        self.api_function = OpsFunction(
            self,
            "ApiHandler",
            entry=FUNCTIONS_DIR / "user_service",
            handler="api.lambda_handler",
            profile=profile,
            monitoring=monitoring,
            description="The user service's REST API (every route)",
            service_name="user-api",
            layers=layers,
            memory_size=512,
            timeout=API_TIMEOUT,
            alarm_thresholds=alarm_thresholds,
            smoke_test_event=SMOKE_TEST_EVENT,
            environment={
                "USERS_TABLE": self.users_table.table_name,
                "USER_CREATED_TOPIC": self.user_created_topic.topic_arn,
                "PAGE_TOKEN_SECRET_ARN": self.page_token_secret.secret_arn,
                "ALLOWED_ORIGINS": ",".join(self.allowed_origins),
            },
        )
        self._grant_api()

        front = UserApi(
            self,
            "Front",
            profile=profile,
            handler=self.api_function.alias,
            allowed_origins=self.allowed_origins,
            throttling=self.throttling,
            user_pool=user_pool,
            mfa=mfa,
            self_sign_up=self_sign_up,
            user_pool_email=user_pool_email,
            feature_plan=feature_plan,
            manage_account_logging_role=manage_account_logging_role,
            execution_log_level=execution_log_level,
            web_acl_arn=web_acl_arn,
            firewall=firewall,
            api_name=api_name,
        )
        self.front = front
        self.api = front.api
        self.stage = front.stage
        self.user_pool = front.user_pool
        self.user_pool_client = front.user_pool_client

        self.metrics_function = self._metrics_job(
            layers, user_count_source, metrics_schedule, alarm_thresholds
        )
        self.alarms = self._alarms()
        if monitoring is not None:
            self._dashboard(monitoring)

    @property
    def url(self) -> str:
        """The stage's base URL (`https://<id>.execute-api.<region>.amazonaws.com/<stage>/`)."""
        return self.api.url

    def _index_arn(self, index: str) -> str:
        return f"{self.users_table.table_arn}/index/{index}"

    def _grant_api(self) -> None:
        """Exactly the calls `api.py` makes: items of the table (a transaction's parts are
        authorized as these), the e-mail index by Query, the created index by Scan."""
        role = self.api_function.role
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                resources=[self.users_table.table_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Query"], resources=[self._index_arn(EMAIL_INDEX)]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Scan"], resources=[self._index_arn(CREATED_INDEX)]
            )
        )
        self.user_created_topic.grant_publish(self.api_function.function)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to the KMS-encrypted user-created topic needs GenerateDataKey* on "
            "that topic's key alone (the grant Topic.grant_publish makes)",
        )
        self.page_token_secret.grant_read(self.api_function.function)

    def _metrics_job(
        self,
        layers: Sequence[lambda_.ILayerVersion],
        user_count_source: str,
        schedule: scheduler.ScheduleExpression | None,
        alarm_thresholds: AlarmThresholds | None,
    ) -> OpsFunction:
        job = OpsFunction(
            self,
            "Metrics",
            entry=FUNCTIONS_DIR / "user_service",
            handler="user_metrics.lambda_handler",
            profile=self.profile,
            monitoring=self.monitoring,
            description="Publishes the user count and last hour's sign-ups",
            service_name="user-metrics",
            layers=layers,
            timeout=Duration.minutes(5) if user_count_source == "scan" else Duration.minutes(1),
            alarm_thresholds=alarm_thresholds,
            smoke_test_event=SMOKE_TEST_EVENT,
            environment={
                "USERS_TABLE": self.users_table.table_name,
                "METRICS_NAMESPACE": self.metrics_namespace,
                "USER_COUNT_SOURCE": user_count_source,
            },
            schedule=ScheduleOptions(
                expression=schedule or scheduler.ScheduleExpression.cron(minute="5", hour="*"),
                enabled=self.profile.business_metrics,
                description=f"Hourly user metrics of {display_path(self)}",
            ),
        )
        role = job.role
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:DescribeTable"], resources=[self.users_table.table_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Query"], resources=[self._index_arn(CREATED_INDEX)]
            )
        )
        if user_count_source == "scan":
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["dynamodb:Scan"], resources=[self._index_arn(EMAIL_INDEX)]
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": self.metrics_namespace}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData has no resource-level permissions; the statement is "
            "conditioned on the job's namespace (cloudwatch:namespace)",
        )
        return job

    # --- alarms and dashboard ---------------------------------------------------------

    def _throttles(self, metric_name: str) -> cloudwatch.IMetric:
        """Throttled requests of the table and of each index (an index that cannot keep up
        throttles the table's writes too), summed per period."""
        table = self.users_table.table_name
        prefix = metric_name[: -len("ThrottleEvents")].lower()
        using: dict[str, cloudwatch.IMetric] = {}
        for key, index in (("table", None), ("email", EMAIL_INDEX), ("created", CREATED_INDEX)):
            using[f"{prefix}_{key}"] = cloudwatch.Metric(
                namespace="AWS/DynamoDB",
                metric_name=metric_name,
                dimensions_map=(
                    {"TableName": table}
                    if index is None
                    else {"TableName": table, "GlobalSecondaryIndexName": index}
                ),
                statistic="Sum",
                period=METRIC_PERIOD,
            )
        return cloudwatch.MathExpression(
            expression=" + ".join(f"FILL({id}, 0)" for id in using),
            using_metrics=using,
            period=METRIC_PERIOD,
            label=metric_name,
        )

    def _alarms(self) -> dict[str, dict[Severity, cloudwatch.Alarm]]:
        stage = self.stage
        thresholds = self.thresholds
        path = display_path(self)
        common: dict[str, Any] = {
            "actions_enabled": self.profile.alarm_actions_enabled,
            "monitoring": self.monitoring,
        }
        server_error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={
                "errors": stage.metric_server_error(period=METRIC_PERIOD, statistic="Sum"),
                "requests": stage.metric_count(period=METRIC_PERIOD, statistic="SampleCount"),
            },
            period=METRIC_PERIOD,
            label="5XX rate (%)",
        )
        at_least = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        alarms = {
            "server_error_rate": create_alarms(
                self,
                "ServerErrorRate",
                metric=server_error_rate,
                thresholds=thresholds.server_error_rate_percent,
                description=f"{path}: API responses with a 5XX status (% of requests)",
                **common,
            ),
            "client_errors": create_alarms(
                self,
                "ClientErrors",
                metric=stage.metric_client_error(period=METRIC_PERIOD, statistic="Sum"),
                thresholds=thresholds.client_errors,
                description=f"{path}: API responses with a 4XX status",
                **common,
            ),
            "latency": create_alarms(
                self,
                "Latency",
                metric=stage.metric_latency(period=METRIC_PERIOD, statistic="p99"),
                thresholds=thresholds.latency_p99_ms,
                description=f"{path}: p99 API latency (ms)",
                evaluation_periods=3,
                datapoints_to_alarm=2,
                **common,
            ),
            "read_throttles": create_alarms(
                self,
                "ReadThrottles",
                metric=self._throttles("ReadThrottleEvents"),
                thresholds=thresholds.read_throttles,
                comparison=at_least,
                description=f"{path}: throttled reads of the users table and its indexes",
                **common,
            ),
            "write_throttles": create_alarms(
                self,
                "WriteThrottles",
                metric=self._throttles("WriteThrottleEvents"),
                thresholds=thresholds.write_throttles,
                comparison=at_least,
                description=f"{path}: throttled writes of the users table and its indexes",
                **common,
            ),
            "email_age": create_alarms(
                self,
                "EmailAge",
                metric=self.email_queue.metric_approximate_age_of_oldest_message(
                    period=METRIC_PERIOD, statistic="Maximum"
                ),
                thresholds=thresholds.email_age_seconds,
                description=f"{path}: age (s) of the oldest e-mail waiting to be sent",
                **common,
            ),
        }
        if self.front.firewall is not None:
            alarms["rate_limited"] = create_alarms(
                self,
                "RateLimited",
                metric=self.front.firewall.metric_rate_limited(METRIC_PERIOD),
                thresholds=thresholds.rate_limited_requests,
                comparison=at_least,
                description=(
                    f"{path}: requests over the firewall's per-client rate limit (answered 429)"
                ),
                **common,
            )
        return alarms

    def _dashboard(self, monitoring: Monitoring) -> None:
        stage = self.stage

        def graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=metrics, width=6, height=6)

        monitoring.dashboard_for(self).add_widgets(
            cloudwatch.TextWidget(
                markdown=f"### {display_path(self)}: API, table, e-mail queue", width=24, height=1
            )
        )
        monitoring.dashboard_for(self).add_widgets(
            graph(
                "API requests and errors",
                [
                    stage.metric_count(
                        period=METRIC_PERIOD, statistic="SampleCount", label="requests"
                    ),
                    stage.metric_client_error(period=METRIC_PERIOD, statistic="Sum", label="4XX"),
                    stage.metric_server_error(period=METRIC_PERIOD, statistic="Sum", label="5XX"),
                    *(
                        [self.front.firewall.metric_rate_limited(METRIC_PERIOD)]
                        if self.front.firewall is not None
                        else []
                    ),
                ],
            ),
            graph(
                "API latency",
                [
                    stage.metric_latency(period=METRIC_PERIOD, statistic="p50", label="p50"),
                    stage.metric_latency(period=METRIC_PERIOD, statistic="p99", label="p99"),
                    stage.metric_integration_latency(
                        period=METRIC_PERIOD, statistic="p99", label="integration p99"
                    ),
                ],
            ),
            graph(
                "Users table throttles",
                [
                    self._throttles("ReadThrottleEvents"),
                    self._throttles("WriteThrottleEvents"),
                ],
            ),
            graph(
                "E-mail queue",
                [
                    self.email_queue.metric_approximate_number_of_messages_visible(
                        period=METRIC_PERIOD, statistic="Maximum", label="waiting"
                    ),
                    self.email_queue.metric_approximate_age_of_oldest_message(
                        period=METRIC_PERIOD, statistic="Maximum", label="oldest (s)"
                    ),
                ],
            ),
        )
