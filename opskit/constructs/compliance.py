"""Acknowledging a scanner's finding on one resource, with the reason, whatever the scanner.

Security teams gate CDK output on cdk-nag (at synth), checkov and AWS's serverless rules
for cfn-lint (on the template). Each has its own way to accept a finding; `acknowledge`
is the one way here, and it chooses by the rule's id:

- `CKV_AWS_27`: checkov, as `Metadata.checkov.skip` on the CloudFormation resource;
- `ES6000`, `WS1004` (cfn-lint rule ids, serverless rules included): cfn-lint, as
  `Metadata.cfn-lint.config.ignore_checks`, the reason kept beside it under
  `Metadata.opskit.reasons` (cfn-lint has no field for one);
- anything else (`AwsSolutions-SQS3`, `Serverless-LambdaDLQ`): cdk-nag v3, through
  `Validations.of(scope).acknowledge`, for the scope and its children.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

from opskit.errors import PropsError

_CHECKOV = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")
_CFN_LINT = re.compile(r"^[EWI]S?\d{4}$")


def acknowledge(scope: IConstruct, rules: str | Sequence[str], reason: str) -> None:
    """Accepts each finding of `rules` on `scope`, for the stated reason."""
    for rule in [rules] if isinstance(rules, str) else rules:
        if _CHECKOV.match(rule):
            _template_skip(scope, rule, reason, checkov=True)
        elif _CFN_LINT.match(rule):
            _template_skip(scope, rule, reason, checkov=False)
        else:
            Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def _template_skip(scope: IConstruct, rule: str, reason: str, *, checkov: bool) -> None:
    resource = scope if isinstance(scope, CfnResource) else scope.node.default_child
    if not isinstance(resource, CfnResource):
        raise PropsError(f"{scope.node.path}: {rule} can only be acknowledged on one resource")
    if checkov:
        skips = [*(resource.get_metadata("checkov") or {}).get("skip", [])]
        if all(skip["id"] != rule for skip in skips):
            skips.append({"id": rule, "comment": reason})
        resource.add_metadata("checkov", {"skip": skips})
        return
    config = resource.get_metadata("cfn-lint") or {"config": {"ignore_checks": []}}
    checks = config["config"]["ignore_checks"]
    if rule not in checks:
        checks.append(rule)
    resource.add_metadata("cfn-lint", config)
    reasons = (resource.get_metadata("opskit") or {}).get("reasons", {})
    resource.add_metadata("opskit", {"reasons": {**reasons, rule: reason}})


def acknowledge_wildcard_resources(
    scope: IConstruct, resources: Iterable[str], reason: str
) -> None:
    """Accepts cdk-nag's wildcard-resource finding (`AwsSolutions-IAM5`) for each of
    `resources`, named as cdk-nag names it: `<AWS::Region>` where the stack is
    environment-agnostic, `eu-west-1` where it is pinned (a pipeline stage)."""
    for resource in resources:
        rendered = _nag_text(Stack.of(scope).resolve(resource))
        acknowledge(scope, f"AwsSolutions-IAM5[Resource::{rendered}]", reason)


def _nag_text(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag writes it in a finding's id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_nag_text(part) for part in parts)
    raise ValueError(f"cannot name {value!r} as cdk-nag does")
