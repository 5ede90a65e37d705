"""What identifies an object of the jsii runtime across the Python proxies it is given.

jsii hands Python a new proxy each time it returns an object created on its own side
(`node.default_child`, a static property, a stack made by a construct), so Python
identity and hashing cannot tell two proxies of one object apart. The object's jsii
reference can: it is unique in the runtime and never reused, and jsii never frees the
object (so neither do the caches keyed by it here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def reference(obj: Any) -> str:
    """The object's jsii reference (`aws-cdk-lib.Stack@10019`); a local attribute, no
    round trip."""
    return str(obj.__jsii_ref__.ref)


def cached_by_reference(function: Callable[[T], R]) -> Callable[[T], R]:
    """`function` of a jsii object, computed once per object (whichever proxy is given)."""
    results: dict[str, R] = {}

    @functools.wraps(function)
    def cached(obj: T) -> R:
        key = reference(obj)
        if key not in results:
            results[key] = function(obj)
        return results[key]

    return cached
