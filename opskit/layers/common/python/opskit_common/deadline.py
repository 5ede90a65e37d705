"""How much of the invocation's time is left, so work stops cleanly before Lambda kills it.

A function that is killed at its timeout loses whatever it has not reported; one that
watches its deadline can stop between two units of work, say what is left, and let the
next run continue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Deadline:
    """A point on a monotonic clock, ``margin_seconds`` before the invocation's timeout."""

    def __init__(
        self, seconds_from_now: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.at = clock() + seconds_from_now

    @classmethod
    def from_context(
        cls,
        context: Any,
        *,
        margin_seconds: float,
        margin_fraction: float | None = None,
        default_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> Deadline:
        """From ``context.get_remaining_time_in_millis()`` less the margin; without a Lambda
        context (a local run), ``default_seconds`` from now. ``margin_fraction`` caps the
        margin at that share of the time left, so a short invocation still gets work done."""
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        seconds = default_seconds if remaining_ms is None else float(remaining_ms()) / 1000
        margin = margin_seconds
        if margin_fraction is not None:
            margin = min(margin, seconds * margin_fraction)
        return cls(max(0.0, seconds - margin), clock=clock)

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.at - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.at
