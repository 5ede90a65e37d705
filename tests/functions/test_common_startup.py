"""Handlers freeze what they built at import, in Lambda only."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from opskit_common.startup import imports_done


@pytest.fixture
def freezes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(True))
    return calls


def test_under_lambdas_runtime_interface_import_time_objects_are_frozen(monkeypatch, freezes):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    imports_done()
    assert freezes == [True]


def test_elsewhere_nothing_is_frozen(monkeypatch, freezes):
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "set by make invoke too")
    imports_done()
    assert freezes == []


@pytest.mark.parametrize(
    "module",
    [
        "backup/app.py",
        "env_scheduler/app.py",
        "log_processor/app.py",
        "notification/app.py",
        "snapshot_cleanup/app.py",
        "user_service/api.py",
        "user_service/email_sender.py",
        "user_service/user_created.py",
        "user_service/user_metrics.py",
    ],
)
def test_every_handler_module_ends_by_saying_its_imports_are_done(module):
    source = (Path(__file__).parents[2] / "opskit" / "functions" / module).read_text()
    assert source.rstrip().endswith("imports_done()")
