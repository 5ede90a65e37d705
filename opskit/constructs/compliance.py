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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

from opskit.errors import PropsError
from opskit.references import cached_by_reference

_CHECKOV = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")
_CFN_LINT = re.compile(r"^[EWI]S?\d{4}$")


def acknowledge(scope: IConstruct, rules: str | Sequence[str], reason: str) -> None:
    """Accepts each finding of `rules` on `scope`, for the stated reason."""
    acknowledge_each(scope, dict.fromkeys([rules] if isinstance(rules, str) else rules, reason))


def acknowledge_each(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Accepts each finding on `scope`, each for its own reason (rule id -> reason)."""
    checkov = {rule: why for rule, why in reasons.items() if _CHECKOV.match(rule)}
    lint = {rule: why for rule, why in reasons.items() if _CFN_LINT.match(rule)}
    nag = [
        Acknowledgment(id=rule, reason=why)
        for rule, why in reasons.items()
        if rule not in checkov and rule not in lint
    ]
    if nag:
        Validations.of(scope).acknowledge(*nag)
    if not checkov and not lint:
        return
    resource = _resource(scope, next(iter({**checkov, **lint})))
    skips = _skips_of(resource)
    additions = [(skips.add_checkov, checkov), (skips.add_lint, lint)]
    if next(rule for rule in reasons if rule in checkov or rule in lint) in lint:
        additions.reverse()  # metadata keys in the order of the reasons, as written before
    for add, rules in additions:
        if rules:
            add(resource, rules)


class _Skips:
    """The template-scanner findings accepted on one resource, kept here once read: each
    read of the resource's metadata is a round trip to the jsii runtime. What the resource
    held under a scanner's key before opskit first wrote it is kept."""

    def __init__(self) -> None:
        self.checkov: list[dict[str, Any]] | None = None
        self.lint_config: dict[str, Any] = {}
        self.reasons: dict[str, str] | None = None

    def add_checkov(self, resource: CfnResource, reasons: Mapping[str, str]) -> None:
        if self.checkov is None:
            self.checkov = list((resource.get_metadata("checkov") or {}).get("skip", []))
        known = {skip.get("id") for skip in self.checkov}
        self.checkov += [
            {"id": rule, "comment": why} for rule, why in reasons.items() if rule not in known
        ]
        resource.add_metadata("checkov", {"skip": self.checkov})

    def add_lint(self, resource: CfnResource, reasons: Mapping[str, str]) -> None:
        if self.reasons is None:
            self.lint_config = dict((resource.get_metadata("cfn-lint") or {}).get("config", {}))
            self.reasons = dict((resource.get_metadata("opskit") or {}).get("reasons", {}))
        checks = self.lint_config.setdefault("ignore_checks", [])
        checks += [rule for rule in reasons if rule not in checks]
        self.reasons.update(reasons)
        resource.add_metadata("cfn-lint", {"config": self.lint_config})
        resource.add_metadata("opskit", {"reasons": self.reasons})


@cached_by_reference
def _skips_of(resource: CfnResource) -> _Skips:
    return _Skips()


def _resource(scope: IConstruct, rule: str) -> CfnResource:
    resource = scope if isinstance(scope, CfnResource) else scope.node.default_child
    if not isinstance(resource, CfnResource):
        raise PropsError(f"{scope.node.path}: {rule} can only be acknowledged on one resource")
    return resource


def acknowledge_wildcard_resources(
    scope: IConstruct, resources: Iterable[str], reason: str
) -> None:
    """Accepts cdk-nag's wildcard-resource finding (`AwsSolutions-IAM5`) for each of
    `resources`, named as cdk-nag names it: `<AWS::Region>` where the stack is
    environment-agnostic, `eu-west-1` where it is pinned (a pipeline stage)."""
    stack = Stack.of(scope)
    acknowledge(
        scope,
        [f"AwsSolutions-IAM5[Resource::{_nag_text(stack.resolve(r))}]" for r in resources],
        reason,
    )


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
