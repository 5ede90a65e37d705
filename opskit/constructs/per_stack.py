"""What a stack holds once, however many of its constructs ask for it: the logs key, the layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_cdk import Stack
from constructs import IConstruct

from opskit.errors import PropsError
from opskit.references import cached_by_reference

T = TypeVar("T")


@cached_by_reference
def _held(stack: Stack) -> dict[str, Any]:
    """What opskit made in `stack`, by id. Kept on this side of the jsii runtime: finding a
    stack's child again is a round trip per look-up, and these are asked for by every
    function."""
    return {}


def once_per_stack(scope: IConstruct, id: str, create: Callable[[Stack], T]) -> T:
    """The stack's `id`: what `create(stack)` made when a construct of `scope`'s stack first
    asked for it. A construct of that id put in the stack by anything else is refused."""
    stack = Stack.of(scope)
    held = _held(stack)
    if id not in held:
        if stack.node.try_find_child(id) is not None:
            raise PropsError(
                f"{stack.node.path}: opskit keeps its own {id!r} in each stack; another "
                "construct has that id"
            )
        held[id] = create(stack)
    return held[id]  # type: ignore[no-any-return]


def made_in_stack(scope: IConstruct, id: str) -> Any | None:
    """What `once_per_stack` made under `id` in `scope`'s stack, if anything; makes nothing."""
    return _held(Stack.of(scope)).get(id)
