"""Where opskit constructs and the services they enlist may reach: this account, and across
stacks within one account and region only."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack, Token
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from opskit.errors import PropsError
from opskit.references import reference


def require_same_environment(stack: Stack, home: Stack, *, cannot: str, fix: str) -> None:
    """Refuses, in one line, `stack` reaching `home` in another account or region, or with
    one of them environment-agnostic (it may be deployed anywhere). `cannot` says what
    would not work, `fix` what to do instead; CDK's own error would advise a physical name,
    which deploys but does not work. A pair found to agree is not read again."""
    pair = (reference(stack), reference(home))
    if pair in _AGREEING:
        return
    for what in ("account", "region"):
        theirs, ours = getattr(stack, what), getattr(home, what)
        named = (not Token.is_unresolved(theirs), not Token.is_unresolved(ours))
        if named == (True, True) and theirs != ours:
            raise PropsError(
                f"{stack.node.path}: {cannot}: {home.node.path} is in {what} {ours}, this "
                f"stack in {theirs}; {fix.format(what=what)}"
            )
        if named[0] != named[1]:
            agnostic = stack if named[1] else home
            raise PropsError(
                f"{stack.node.path}: {cannot}: stack {agnostic.node.path} names no {what} and "
                "the other does; give both stacks the same env"
            )
    _AGREEING.add(pair)


_AGREEING: set[tuple[str, str]] = set()
"""Pairs of stacks (by jsii reference, never reused) already found in one environment."""


def for_this_account(
    service: str,
    *,
    actions: Sequence[str],
    resource: str,
    source_arn: str,
    account: str | None,
) -> iam.PolicyStatement:
    """A resource policy statement: `service` may do `actions` on `resource` on behalf of
    this account's `source_arn` resources only (AWS's guard against the confused deputy).
    `account` adds `aws:SourceAccount` where the service's guide documents it; without it,
    `source_arn` (which names the account) is the whole condition."""
    conditions: dict[str, dict[str, str]] = {"ArnLike": {"aws:SourceArn": source_arn}}
    if account is not None:
        conditions = {"StringEquals": {"aws:SourceAccount": account}, **conditions}
    return iam.PolicyStatement(
        principals=[iam.ServicePrincipal(service)],
        actions=list(actions),
        resources=[resource],
        conditions=conditions,
    )


def known_to_depend(stack: Stack, other: Stack, *, monitoring: IConstruct | None) -> bool:
    """Whether `stack` is known to deploy after `other`: the `Monitoring` its constructs
    notify is there, or it was told so (`add_dependency`). Where it is not known, opskit
    puts what joins the two in `other`, as stacks that share a monitoring stack depend on
    it; references made later are known only at synthesis."""
    key = reference(other)
    if monitoring is not None and reference(Stack.of(monitoring)) == key:
        return True
    return any(reference(dependency) == key for dependency in stack.dependencies)
