"""Specification of opskit_common.deadline and opskit_common.tags."""

from __future__ import annotations

from opskit_common.deadline import Deadline
from opskit_common.tags import (
    BACKUP_OWNERSHIP_TAGS,
    as_dict,
    as_list,
    carries,
    is_permanent,
)

from tests.functions.conftest import LambdaContext


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_given_lambda_context_then_deadline_is_its_remaining_time_less_the_margin() -> None:
    clock = Clock()
    deadline = Deadline.from_context(LambdaContext(), margin_seconds=5, clock=clock)
    assert deadline.remaining() == 25.0 and not deadline.expired()
    clock.now += 25
    assert deadline.remaining() == 0.0 and deadline.expired()


def test_given_a_margin_fraction_then_a_short_invocation_keeps_at_most_that_share() -> None:
    clock = Clock()
    short = Deadline.from_context(
        LambdaContext(), margin_seconds=100, margin_fraction=0.5, clock=clock
    )
    assert short.remaining() == 15.0, "half of the 30 s left, not the 100 s margin"
    ample = Deadline.from_context(None, margin_seconds=100, margin_fraction=0.5, clock=clock)
    assert ample.remaining() == 800.0, "900 s left: the margin itself"


def test_given_no_lambda_context_then_deadline_uses_the_default() -> None:
    clock = Clock()
    assert Deadline.from_context(None, margin_seconds=1, default_seconds=60, clock=clock).at == 159


def test_given_api_tag_lists_then_dicts_and_back() -> None:
    tags = as_dict([{"Key": "B", "Value": "2"}, {"Key": "A", "Value": None}, {"Value": "x"}])
    assert tags == {"A": "", "B": "2"}
    assert as_list({"B": "2", "A": "1"}) == [{"Key": "A", "Value": "1"}, {"Key": "B", "Value": "2"}]
    assert as_dict(None) == {}


def test_ownership_is_every_tag_with_its_exact_value() -> None:
    owned = {**BACKUP_OWNERSHIP_TAGS, "Environment": "dev"}
    assert carries(owned, BACKUP_OWNERSHIP_TAGS)
    assert not carries({"AutomatedBackup": "true"}, BACKUP_OWNERSHIP_TAGS)
    assert not carries({**BACKUP_OWNERSHIP_TAGS, "CreatedBy": "someone"}, BACKUP_OWNERSHIP_TAGS)


def test_permanent_retention_is_recognised_whatever_its_case() -> None:
    assert is_permanent({"Retention": "Permanent "})
    assert not is_permanent({"Retention": "30d"}) and not is_permanent({})
