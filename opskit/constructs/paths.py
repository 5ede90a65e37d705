"""How a construct is named where people read it: descriptions, alarms and dashboards."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import IConstruct

from opskit.references import reference

_placed: dict[str, tuple[str, str]] = {}
"""(stack name, path inside the stack) by jsii reference, of constructs already looked at:
a construct never moves, and each look-up is a few round trips to the jsii runtime."""

_stacks: dict[str, tuple[str, str]] = {}
"""(name, path) of each stack, by jsii reference."""


def _place(construct: IConstruct) -> tuple[str, str]:
    placed = _placed.get(reference(construct))
    if placed is None:
        stack = Stack.of(construct)
        stack_name, stack_path = _stacks.get(reference(stack)) or _stacks.setdefault(
            reference(stack), (stack.stack_name, stack.node.path)
        )
        inside = construct.node.path[len(stack_path) :].lstrip("/")
        placed = _placed[reference(construct)] = (stack_name, inside)
    return placed


def path_in_stack(construct: IConstruct) -> str:
    """`DeploymentNotifier/Notifier`: the same whether a pipeline stage holds the stack or
    the app does."""
    return _place(construct)[1]


def display_path(construct: IConstruct) -> str:
    """`opskit-prod/DeploymentNotifier/Notifier`: the stack's name, then the construct's path
    inside it. The same whether a pipeline stage holds the stack or the app does, so
    templates deployed by hand and by the pipeline agree."""
    stack_name, inside = _place(construct)
    return f"{stack_name}/{inside}" if inside else stack_name
