"""The user service's event pipeline: user created -> SNS -> processor -> SQS -> e-mail sender.

The settings are those the handlers document (`user_created.py`, `email_sender.py`): a
filter policy on `event_type`, async retries on the processor with leases shorter than
Lambda's retry delay, and an SQS event source with partial batch failures, a concurrency
cap the pollers respect, and a redrive after five receives.
"""

from __future__ import annotations

import re
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.compliance import acknowledge, acknowledge_wildcard_resources
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.monitoring import Monitoring
from opskit.constructs.ops_function import AlarmThresholds, OpsFunction
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

EVENT_TYPE = "user_created"
SMOKE_TEST_EVENT = {"opskit": {"smokeTest": True}}
PROCESSOR_TIMEOUT = Duration.seconds(30)
"""Under a minute: a crashed attempt's lease has expired when Lambda retries (1, then 2 min)."""
SENDER_TIMEOUT = Duration.seconds(30)
BATCH_SIZE = 10
BATCHING_WINDOW = Duration.seconds(5)
MAX_RECEIVES = 5
"""Lambda's advice for SQS sources: room for batches failed while SES throttles."""
EMAIL_RETENTION = Duration.days(14)

SENDER_ADDRESS = re.compile(r"^[^@\s,;<>()\"']+@([^@\s,;<>()\"'.]+(\.[^@\s,;<>()\"'.]+)+)$")
"""One plain address, as the sender's FROM_EMAIL must be (no display name, no list)."""
CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate(
    where: str, *, ses_sender: str, ses_configuration_set: str | None, sender_concurrency: int
) -> None:
    """PropsError naming the first setting the pipeline cannot be built with."""
    if SENDER_ADDRESS.match(ses_sender) is None:
        raise PropsError(f"{where}: ses_sender {ses_sender!r} is not one plain e-mail address")
    if ses_configuration_set is not None and not CONFIGURATION_SET.match(ses_configuration_set):
        raise PropsError(
            f"{where}: ses_configuration_set {ses_configuration_set!r} is not an SES "
            "configuration set name (letters, digits, '-', '_'; at most 64)"
        )
    if not 2 <= sender_concurrency <= 1000:
        raise PropsError(
            f"{where}: sender_concurrency must be 2-1000 (the event source's maximum "
            f"concurrency), got {sender_concurrency}"
        )


def email_visibility_timeout(sender_timeout: Duration) -> Duration:
    """Six times the sender's timeout (Lambda's advice for SQS sources: room for retries of a
    throttled batch) plus the batching window, during which received messages wait too."""
    return Duration.seconds(6 * sender_timeout.to_seconds() + BATCHING_WINDOW.to_seconds())


class UserEvents(Construct):
    """The user-created topic and what it feeds.

    `topic` (KMS-encrypted, SSL only) -> `processor` (subscribed with a filter policy on
    `event_type`; deliveries SNS cannot make go to its `subscription` dead-letter queue,
    events it fails on after two retries to its async one) -> `email_queue` (SSE, SSL only,
    14 days) -> `sender` (batches of 10 within 5 s, partial batch failures, at most
    `sender_concurrency` at once) -> SES. Messages received five times without success
    move to `email_dead_letter_queue`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        monitoring: Monitoring | None,
        audit_table: dynamodb.ITable,
        ses_sender: str,
        ses_configuration_set: str | None,
        sender_concurrency: int,
        reserve_sender_concurrency: bool,
        alarm_thresholds: AlarmThresholds | None,
    ) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the opskit {profile.name} user-created topic",
            enable_key_rotation=True,
            removal_policy=profile.removal_policy,
        )
        self.topic = sns.Topic(
            self,
            "UserCreated",
            display_name=f"opskit {profile.name} user created",
            master_key=self.key,
            enforce_ssl=True,
        )
        common: dict[str, Any] = {
            "entry": FUNCTIONS_DIR / "user_service",
            "profile": profile,
            "monitoring": monitoring,
            "layers": [common_layer(self), powertools_layer(self)],
            "alarm_thresholds": alarm_thresholds,
            "smoke_test_event": SMOKE_TEST_EVENT,
        }

        self.sender = OpsFunction(
            self,
            "EmailSender",
            handler="email_sender.lambda_handler",
            description="Sends the user service's e-mails with SES",
            service_name="email-sender",
            environment={
                "FROM_EMAIL": ses_sender,
                **({"CONFIGURATION_SET": ses_configuration_set} if ses_configuration_set else {}),
            },
            timeout=SENDER_TIMEOUT,
            reserved_concurrency=sender_concurrency if reserve_sender_concurrency else None,
            **common,
        )
        self._allow_sending(ses_configuration_set, ses_sender)
        self.email_dead_letter_queue = self.sender.add_dead_letter_queue(
            "EmailDeadLetterQueue", label="email"
        )
        self.email_queue = sqs.Queue(
            self,
            "EmailQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=EMAIL_RETENTION,
            visibility_timeout=email_visibility_timeout(SENDER_TIMEOUT),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.email_dead_letter_queue, max_receive_count=MAX_RECEIVES
            ),
            removal_policy=profile.removal_policy,
        )
        acknowledge(
            self.email_queue,
            "CKV_AWS_27",
            "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which checkov does "
            "not recognise",
        )
        self.email_queue.grant_consume_messages(self.sender.alias)
        self.event_source = lambda_.EventSourceMapping(
            self,
            "EmailEvents",
            target=self.sender.alias,
            event_source_arn=self.email_queue.queue_arn,
            batch_size=BATCH_SIZE,
            max_batching_window=BATCHING_WINDOW,
            report_batch_item_failures=True,
            max_concurrency=sender_concurrency,
        )
        acknowledge(
            self.event_source,
            ("Serverless-LambdaEventSourceMappingDestination", "ES1001"),
            "Lambda has no on-failure destination for SQS sources; the queue's redrive "
            f"policy moves a message to the e-mail dead-letter queue after {MAX_RECEIVES} "
            "receives",
        )

        self.processor = OpsFunction(
            self,
            "UserCreatedProcessor",
            handler="user_created.lambda_handler",
            description="Queues the welcome e-mail and audits each user sign-up",
            service_name="user-created",
            environment={
                "AUDIT_TABLE": audit_table.table_name,
                "EMAIL_QUEUE": self.email_queue.queue_url,
            },
            timeout=PROCESSOR_TIMEOUT,
            retry_attempts=2,
            **common,
        )
        audit_table.grant(self.processor.function, "dynamodb:PutItem", "dynamodb:UpdateItem")
        self.email_queue.grant_send_messages(self.processor.function)
        self.subscription_dead_letter_queue = self.processor.add_dead_letter_queue(
            "SubscriptionDeadLetterQueue", label="subscription"
        )
        self.subscription = self.topic.add_subscription(
            subscriptions.LambdaSubscription(
                self.processor.alias,
                filter_policy={
                    "event_type": sns.SubscriptionFilter.string_filter(allowlist=[EVENT_TYPE])
                },
                dead_letter_queue=self.subscription_dead_letter_queue,
            )
        )
        acknowledge(
            self.subscription,
            "CloudFormation-Validate::W3694",
            "SNS delivers to the alias (a qualified function ARN), so CodeDeploy's traffic "
            "shifting applies to events too; Lambda subscriptions accept qualified ARNs",
        )

    def _allow_sending(self, configuration_set: str | None, sender: str) -> None:
        """SES SendEmail from exactly `sender`, on the account's identities and on the
        configuration set when there is one. Identities, not only the sender's: while the
        account is in the SES sandbox, SES also authorizes the send on each recipient's
        (verified) identity; the `ses:FromAddress` condition still pins the sender."""
        stack = Stack.of(self)
        prefix = f"arn:{stack.partition}:ses:{stack.region}:{stack.account}"
        resources = [f"{prefix}:identity/*"]
        if configuration_set:
            resources.append(f"{prefix}:configuration-set/{configuration_set}")
        self.sender.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ses:SendEmail"],
                resources=resources,
                conditions={"StringEquals": {"ses:FromAddress": sender}},
            )
        )
        acknowledge_wildcard_resources(
            self.sender.role,
            resources[:1],
            "In the SES sandbox, SES authorizes a send on the recipient's identity too; "
            "ses:FromAddress pins the sender to FROM_EMAIL",
        )
