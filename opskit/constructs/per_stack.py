"""What a stack holds once, however many of its constructs ask for it: the logs key, the layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from aws_cdk import Stack
from constructs import IConstruct

T = TypeVar("T")

_held: WeakKeyDictionary[Stack, dict[str, Any]] = WeakKeyDictionary()
"""Kept on this side of the jsii runtime: finding a stack's child again is a round trip
per look-up, and these are asked for by every function."""


def once_per_stack(scope: IConstruct, id: str, create: Callable[[Stack], T]) -> T:
    """The stack's `id`: what `create(stack)` made when a construct of `scope`'s stack first
    asked for it."""
    stack = Stack.of(scope)
    held = _held.setdefault(stack, {})
    if id not in held:
        held[id] = create(stack)
    return held[id]  # type: ignore[no-any-return]
