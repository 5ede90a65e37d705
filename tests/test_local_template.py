"""`make invoke ENV=<env>` and `make local` read the environment's template from
opskit_local.template: app.py run as the CDK CLI runs it (bundling and CDK's template
validation skipped), kept in the local state folder until one of its sources changes."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from opskit_local import template
from opskit_local.errors import LocalError
from tests.synth import GOLDEN, golden_text


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(template.STATE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def synths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stands in for the synthesis (seconds); lists the environments it was asked for."""
    asked: list[str] = []

    def synthesize(environment: str) -> dict[str, Any]:
        asked.append(environment)
        return {"Resources": {"Made": {"Type": "AWS::SNS::Topic"}}, "Synth": len(asked)}

    monkeypatch.setattr(template, "synthesize", synthesize)
    return asked


def test_app_py_synthesizes_the_golden_template_without_bundling_or_validation(monkeypatch):
    run = subprocess.run
    environments: list[dict[str, str]] = []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        environments.append(kwargs["env"])
        return run(*args, **kwargs)

    monkeypatch.setattr(template.subprocess, "run", recorded)
    synthesized = template.synthesize("dev")
    assert golden_text(json.dumps(synthesized)) == (GOLDEN / "dev.template.json").read_text()
    [environment] = environments
    assert json.loads(environment["CDK_CONTEXT_JSON"])["aws:cdk:bundling-stacks"] == []
    assert environment["CDK_VALIDATION"] == "false"


def test_an_app_that_fails_is_one_line_naming_the_environment_and_opskits_reason():
    with pytest.raises(LocalError) as raised:
        template.synthesize("nowhere")
    message = str(raised.value)
    assert message.startswith("synthesizing nowhere failed: opskit: ")
    assert "nowhere" in message.removeprefix("synthesizing nowhere failed: ")
    assert "\n" not in message


def test_a_template_is_kept_until_one_of_its_sources_changes(kept, synths):
    log = io.StringIO()
    first = template.load("dev", log=log)
    again = template.load("dev")
    assert synths == ["dev"] and again == first
    assert json.loads((kept / "dev.template.json").read_text()) == first
    assert log.getvalue() == "opskit local: synthesizing dev (kept until its sources change)\n"

    source = template.sources()[-1]
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        assert template.load("dev")["Synth"] == 2
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert template.load("staging")["Synth"] == 3, "each environment is kept on its own"


def test_the_sources_are_the_app_its_config_and_constructs_but_not_the_handlers():
    names = {str(path.relative_to(template.REPO)) for path in template.sources()}
    assert {"cdk.json", "app.py", "requirements.txt", "stacks/config.py"} <= names
    assert "opskit/constructs/ops_function.py" in names
    assert "opskit/constructs/user_service/api.py" in names, "subfolders too"
    assert not any(name.startswith("opskit/functions/") for name in names)
