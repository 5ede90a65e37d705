"""How a construct is named where people read it: descriptions, alarms and dashboards."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import IConstruct

from opskit.references import cached_by_reference


@cached_by_reference
def _stack_place(stack: Stack) -> tuple[str, str]:
    """The stack's name and path."""
    return stack.stack_name, stack.node.path


@cached_by_reference
def _place(construct: IConstruct) -> tuple[str, str]:
    """(stack name, path inside the stack), worked out once per construct: a construct never
    moves, and each look-up is a few round trips to the jsii runtime."""
    stack_name, stack_path = _stack_place(Stack.of(construct))
    return stack_name, construct.node.path[len(stack_path) :].lstrip("/")


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
