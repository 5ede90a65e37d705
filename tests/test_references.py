"""jsii references: what opskit's caches key objects of the jsii runtime by."""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_

from opskit.references import cached_by_reference, reference


def test_every_proxy_of_one_object_has_its_reference_and_only_it():
    first, second = lambda_.Runtime.PYTHON_3_12, lambda_.Runtime.PYTHON_3_12
    assert first is not second, "jsii gives a new proxy each time"
    assert reference(first) == reference(second) != reference(lambda_.Runtime.PYTHON_3_13)


def test_a_cached_function_runs_once_per_object_whichever_proxy_asks():
    calls = []

    @cached_by_reference
    def name(runtime: lambda_.Runtime) -> str:
        calls.append(runtime)
        return runtime.name

    assert [name(lambda_.Runtime.PYTHON_3_12) for _ in range(3)] == ["python3.12"] * 3
    assert name(lambda_.Runtime.PYTHON_3_13) == "python3.13"
    assert len(calls) == 2
