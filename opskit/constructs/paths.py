"""How a construct is named where people read it: descriptions, alarms and dashboards."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from aws_cdk import Stack
from constructs import IConstruct

_named: WeakKeyDictionary[IConstruct, str] = WeakKeyDictionary()
"""Paths already worked out: a construct's path never changes, and each look-up is a few
round trips to the jsii runtime."""


def display_path(construct: IConstruct) -> str:
    """`opskit-prod/DeploymentNotifier/Notifier`: the stack's name, then the construct's path
    inside it. The same whether a pipeline stage holds the stack or the app does, so
    templates deployed by hand and by the pipeline agree."""
    named = _named.get(construct)
    if named is None:
        stack = Stack.of(construct)
        inside = construct.node.path[len(stack.node.path) :].lstrip("/")
        named = _named[construct] = f"{stack.stack_name}/{inside}" if inside else stack.stack_name
    return named
