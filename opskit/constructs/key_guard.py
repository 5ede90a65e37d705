"""A critical alert when someone disables a KMS key of the stack or schedules its deletion.

What a key encrypts (tables, secrets, log groups, alert topics) becomes unreadable within
minutes of either call, and a scheduled deletion destroys it for good 7 to 30 days later:
DynamoDB archives an inaccessible table after seven days, under the same key. Nothing else
tells anyone while the key can still be saved; a table without traffic raises no alarm.

KMS reports these calls to EventBridge only through CloudTrail, so the rule hears them
only where a trail logs the region's management events (most organisations keep one).
"""

from __future__ import annotations

import json
from typing import Any

import jsii
from aws_cdk import IStableListProducer, Lazy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IValidation

from opskit.profile import EnvironmentProfile
from opskit.references import reference

KEY_LOSS_CALLS = ("DisableKey", "ScheduleKeyDeletion")
"""The KMS calls that make a key unusable (PutKeyPolicy is left out: every deployment
that changes a key's policy makes it)."""
STACK_LIFECYCLE = "cloudformation.amazonaws.com"
"""Calls CloudFormation makes (deleting a key it no longer keeps) are the stack's own
doing, reviewed as code: tearing down a stack pages nobody."""
PATTERN_LIMIT = 2048
"""EventBridge's longest event pattern, in characters (its default quota)."""
_LONGEST_KEY_ARN = f"arn:aws-us-gov:kms:eusc-de-east-1:{'0' * 12}:key/mrk-{'0' * 32}"


def guard_keys(
    scope: Construct,
    *,
    topic: sns.ITopic,
    undelivered: sqs.IQueue,
    profile: EnvironmentProfile,
) -> events.Rule:
    """A rule that tells `topic` of every successful `KEY_LOSS_CALLS` call on a key made in
    `scope`'s stack, whoever made the key; what EventBridge cannot publish (the topic's own
    key disabled) waits in `undelivered`. Keys are collected at synth, after everything
    is built. It is enabled where the profile enables alarm actions."""
    keys = _KeysOf(Stack.of(scope))
    pattern = _pattern(Lazy.list(keys))
    rule = events.Rule(
        scope,
        "KeyGuard",
        description=f"Disabled or doomed KMS keys of the opskit {profile.name} stack",
        enabled=profile.alarm_actions_enabled,
        event_pattern=events.EventPattern(
            source=pattern["source"],
            detail_type=pattern["detail-type"],
            detail=pattern["detail"],
        ),
    )
    rule.add_target(targets.SnsTopic(topic, message=_alert(profile), dead_letter_queue=undelivered))
    rule.node.add_validation(_FitsEventBridge(keys))
    return rule


def _pattern(key_arns: list[str]) -> dict[str, Any]:
    return {
        "source": ["aws.kms"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["kms.amazonaws.com"],
            "eventName": list(KEY_LOSS_CALLS),
            "errorCode": [{"exists": False}],
            "resources": {"ARN": key_arns},
            "$or": [
                {"userIdentity": {"invokedBy": [{"exists": False}]}},
                {"userIdentity": {"invokedBy": [{"anything-but": [STACK_LIFECYCLE]}]}},
            ],
        },
    }


def _alert(profile: EnvironmentProfile) -> events.RuleTargetInput:
    """What the person paged reads: what happened, who did it, what it costs, how to undo."""
    field = events.EventField.from_path
    return events.RuleTargetInput.from_text(
        f"opskit {profile.name}: {field('$.detail.eventName')} on KMS key "
        f"{field('$.detail.requestParameters.keyId')} in account {field('$.account')}, "
        f"{field('$.region')}, by {field('$.detail.userIdentity.type')} "
        f"{field('$.detail.userIdentity.arn')} at {field('$.time')}. Until the key is usable "
        "again, nothing can read what it encrypts; DynamoDB archives a table it cannot read "
        "after 7 days, and when the key is deleted, the data and every backup under the key "
        "are lost. Undo: aws kms cancel-key-deletion (if scheduled), then aws kms enable-key."
    )


@jsii.implements(IStableListProducer)
class _KeysOf:
    """The ARNs of the KMS keys made in `stack`, its nested stacks' left out (their ARNs
    would need outputs), found once everything is built. Stable, as CDK takes it (it
    resolves the pattern once): found once, and the validation reads the same list."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.found: list[str] | None = None

    def produce(self) -> list[str]:
        if self.found is None:
            home = reference(self.stack)
            self.found = [
                key.attr_arn
                for key in self.stack.node.find_all()
                if isinstance(key, kms.CfnKey) and reference(Stack.of(key)) == home
            ]
        return self.found


@jsii.implements(IValidation)
class _FitsEventBridge:
    """At synth, once the keys are known: a pattern naming more keys than EventBridge's
    pattern limit holds would fail the deployment, whatever else changed."""

    def __init__(self, keys: _KeysOf) -> None:
        self.keys = keys

    def validate(self) -> list[str]:
        count = len(self.keys.produce())
        if _pattern_length(count) <= PATTERN_LIMIT:
            return []
        fits = max(n for n in range(count) if _pattern_length(n) <= PATTERN_LIMIT)
        return [
            f"the key guard watches {count} KMS keys of stack {self.keys.stack.node.path}; "
            f"EventBridge's {PATTERN_LIMIT}-character event pattern holds {fits} key ARNs "
            "at most: move keys to a stack with a Monitoring of its own"
        ]


def _pattern_length(keys: int) -> int:
    """The pattern's length as deployed, every key ARN as long as key ARNs get."""
    return len(json.dumps(_pattern([_LONGEST_KEY_ARN] * keys), separators=(",", ":")))
