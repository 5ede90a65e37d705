"""Acknowledging a rule-pack finding (cdk-nag v3 and other validation plugins), with a reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accepts finding `rule` on `scope` and its children, for the stated reason."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
