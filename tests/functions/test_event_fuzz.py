"""Specification shared by every handler: a malformed event never crashes it.

A fixed sample of the mutation fuzzer's variants (`tests/functions/event_fuzz.py`: each
path of each sample event in `events/` deleted, made null or given a value of another
type, and whole events that are no object) runs through each handler in this process,
against moto. Each must end in the handler's typed error naming what is wrong, a 4xx
with a JSON body (the API), batch item failures (SQS), or a normal result: never a
KeyError, TypeError or AttributeError, and never an API 500. All the variants:
`.venv/bin/python -m tests.functions.event_fuzz`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.functions.event_fuzz import TARGETS, Rig, fuzz, sample
from tests.functions.stand_ins import WebhookServer

SAMPLE_SIZE = 24
"""Variants per function; the sample's total cost is held to about 1 s."""

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(scope="module")
def rig(moto_endpoint: str) -> Iterator[Rig]:
    webhook = WebhookServer().start()
    yield Rig(moto_endpoint, webhook.url)
    webhook.stop()


def test_the_sample_is_the_same_on_every_run_and_takes_from_every_sample_event() -> None:
    for target in TARGETS.values():
        variants = target.variants()
        chosen = sample(variants, SAMPLE_SIZE)
        assert [v.id for v in chosen] == [v.id for v in sample(target.variants(), SAMPLE_SIZE)]
        assert len(chosen) <= SAMPLE_SIZE
        assert {v.sample for v in chosen} == {v.sample for v in variants}, target.name
        assert [v.mutation for v in chosen if not v.path] == [None, [], "", 42, {}], target.name


@pytest.mark.parametrize("name", list(TARGETS))
def test_a_malformed_event_ends_in_the_handlers_typed_error_never_a_crash(
    name: str, rig: Rig, aws_environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the function's handler, configured against moto
    target = TARGETS[name]
    run = rig.handler(target, monkeypatch)

    # WHEN it receives the sampled variants of its sample events
    report = fuzz(target, run, sample(target.variants(), SAMPLE_SIZE))

    # THEN none crashes, and every typed error names what is wrong
    assert [f"{v.id}: {o.detail} {o.line}" for v, o in report.crashes()] == []
    assert [f"{v.id}: {o.detail}" for v, o in report.vague()] == []
