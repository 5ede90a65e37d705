"""An AWS WAF web ACL of the stage's own: a per-client rate limit and AWS's managed rules.

The stage's throttling is one bucket for every caller, so one client can spend it for all;
the rate-based rule limits each client IP on its own (2,000 requests in 5 minutes by
default: callers behind one NAT share it), and answers as the handler does: 429 with a
JSON error, the stage's CORS headers and `Retry-After`. WAF makes that response wholly, so
it has no `request_id`. Two AWS managed rule groups block what no caller of this API sends:
addresses on Amazon's IP reputation lists, and request patterns of known exploits (Log4j's
among them). Their blocks reach the caller as API Gateway's 403 (WAF_FILTERED) in the
handler's error format; the access log's `waf` and `wafStatus` say which requests WAF
blocked.

The web ACL's name is also its metric name and changes with its logical id: CloudWatch's
`WebACL` dimension is the metric name, and a moved construct makes a new web ACL before it
deletes the old, which a fixed name (create-only, unique per region) would refuse.
Associating it replaces any web ACL already on the stage (Firewall Manager's, say).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, Names, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from opskit.constructs.compliance import acknowledge

EVALUATION_WINDOWS = (60, 120, 300, 600)
"""The windows, in seconds, over which WAF counts a client's requests."""
RATE_RULE = "RateLimitPerClient"
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
)
TOO_MANY_REQUESTS = "too-many-requests"


@dataclass(frozen=True)
class ApiFirewall:
    """How many requests one client IP may make in a window before WAF answers 429, and
    whether the managed rule groups only count what they would block."""

    requests_per_client: int = 2000
    window_seconds: int = 300
    count_managed_rules: bool = False
    """Count, not block, what the managed groups match: AWS's advice for rules new to an API
    already serving traffic, until their metrics and sampled requests show no false
    positives. The rate limit blocks either way."""

    def problem(self) -> str | None:
        if not 10 <= self.requests_per_client <= 2_000_000_000:
            return (
                "firewall requests_per_client must be 10 to 2000000000 (WAF's rate limits), "
                f"got {self.requests_per_client}"
            )
        if self.window_seconds not in EVALUATION_WINDOWS:
            return (
                f"firewall window_seconds must be one of {', '.join(map(str, EVALUATION_WINDOWS))} "
                f"(WAF's evaluation windows), got {self.window_seconds}"
            )
        return None


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )


class StageFirewall(Construct):
    """A regional web ACL (`web_acl`) associated with `stage`, and its rate-limited metric."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: apigw.Stage,
        settings: ApiFirewall,
        response_headers: Mapping[str, str],
    ) -> None:
        """
        :param response_headers: headers of the 429, those of the stage's own error responses
            (CORS among them: the response comes wholly from WAF, so without them a browser
            could not read it).
        """
        super().__init__(scope, id)
        self.settings = settings
        self.name = Names.unique_resource_name(self, max_length=128, separator="-")
        managed = [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=(
                    wafv2.CfnWebACL.OverrideActionProperty(count={})
                    if settings.count_managed_rules
                    else wafv2.CfnWebACL.OverrideActionProperty(none={})
                ),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS", name=group
                    )
                ),
                visibility_config=_visibility(group),
            )
            for priority, group in enumerate(MANAGED_RULE_GROUPS)
        ]
        rate_limit = wafv2.CfnWebACL.RuleProperty(
            name=RATE_RULE,
            priority=len(managed),
            action=wafv2.CfnWebACL.RuleActionProperty(
                block=wafv2.CfnWebACL.BlockActionProperty(
                    custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                        response_code=429,
                        custom_response_body_key=TOO_MANY_REQUESTS,
                        response_headers=[
                            wafv2.CfnWebACL.CustomHTTPHeaderProperty(name=name, value=value)
                            for name, value in {
                                **response_headers,
                                "Retry-After": str(settings.window_seconds),
                            }.items()
                        ],
                    )
                )
            ),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    aggregate_key_type="IP",
                    limit=settings.requests_per_client,
                    evaluation_window_sec=settings.window_seconds,
                )
            ),
            visibility_config=_visibility(RATE_RULE),
        )
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=self.name,
            scope="REGIONAL",
            description="opskit user API: per-client rate limit and AWS managed rules",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            custom_response_bodies={
                TOO_MANY_REQUESTS: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps(
                        {"error": "too many requests from this address", "details": []}
                    ),
                )
            },
            rules=[*managed, rate_limit],
            visibility_config=_visibility(self.name),
        )
        acknowledge(
            self.web_acl,
            "CKV2_AWS_31",
            "No WAF logging configuration: per-rule metrics and sampled requests show what "
            "was blocked; full request logs are a cost and a store of client addresses the "
            "consumer chooses",
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )

    def metric_rate_limited(self, period: Duration) -> cloudwatch.Metric:
        """Requests the rate limit answered 429, summed per period."""
        return cloudwatch.Metric(
            namespace="AWS/WAFV2",
            metric_name="BlockedRequests",
            dimensions_map={
                "WebACL": self.name,
                "Rule": RATE_RULE,
                "Region": Stack.of(self).region,
            },
            statistic="Sum",
            period=period,
            label="Requests over the per-client rate limit",
        )
