"""The release workflow and CI: version tags publish what `make package-check` built and
checked, with trusted publishing and no stored token, and CI runs that check on every push."""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from tests.synth import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
PUBLISH_ACTION = "pypa/gh-action-pypi-publish@"


def workflow(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((WORKFLOWS / name).read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads a bare `on` as true
    return loaded  # type: ignore[no-any-return]


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


@pytest.fixture(scope="module")
def release() -> dict[str, Any]:
    return workflow("release.yml")


def test_only_version_tags_start_a_release(release):
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}


def test_the_build_job_checks_the_distributions_against_the_tags_version(release):
    build = release["jobs"]["build"]
    [check] = [command for command in runs(build) if "package-check" in command]
    assert check == 'make package-check PACKAGE_CHECK_ARGS="--expect-version ${GITHUB_REF_NAME#v}"'
    [upload] = [
        s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-artifact")
    ]
    assert upload["with"]["path"] == "dist/"


def test_publishing_uses_trusted_publishing_in_the_pypi_environment_and_no_secret(release):
    publish = release["jobs"]["publish"]
    assert publish["needs"] == "build"
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    [download] = [s for s in publish["steps"] if "download-artifact" in s.get("uses", "")]
    assert (download["with"]["name"], download["with"]["path"]) == ("dist", "dist/")
    [upload] = [s for s in publish["steps"] if s.get("uses", "").startswith(PUBLISH_ACTION)]
    assert "with" not in upload, "no password or token: PyPI trusts the workflow's OIDC token"
    assert runs(publish) == [], "publish uploads the checked files and builds nothing"
    assert "secrets." not in (WORKFLOWS / "release.yml").read_text()
    other_jobs = [job for name, job in release["jobs"].items() if name != "publish"]
    assert all("id-token" not in job.get("permissions", {}) for job in other_jobs)


def test_ci_runs_the_same_build_and_check_on_every_push():
    ci = workflow("ci.yml")
    assert ci["on"]["push"] == {"branches": ["**"]}
    checks = [name for name, job in ci["jobs"].items() if "make package-check" in runs(job)]
    assert checks == ["package"]
    assert "if" not in ci["jobs"]["package"]


def test_ci_checks_the_wheel_on_the_oldest_dependencies_and_python_the_package_allows():
    ci = workflow("ci.yml")
    lowest = ci["jobs"]["package-lowest"]
    assert runs(lowest) == ["make package-check PACKAGE_CHECK_ARGS=--lowest"]
    assert "if" not in lowest
    [python] = [
        s["with"]["python-version"] for s in lowest["steps"] if "setup-python" in s.get("uses", "")
    ]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={python}"


def test_only_jobs_that_never_run_for_a_fork_ask_for_an_oidc_token():
    """GitHub gives a fork's pull request no id-token permission: a job that asks for one
    there fails instead of being skipped."""
    ci = workflow("ci.yml")
    wanting = {
        name: job for name, job in ci["jobs"].items() if "id-token" in job.get("permissions", {})
    }
    assert list(wanting) == ["diff"]
    assert (
        "github.event.pull_request.head.repo.full_name == github.repository"
        in wanting["diff"]["if"]
    )


def test_make_package_check_runs_the_one_check_script():
    dry_run = subprocess.run(
        ["make", "-n", "package-check", "PACKAGE_CHECK_ARGS=--expect-version 1.2.3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(
        r"python scripts/package_check\.py --dist dist --expect-version 1\.2\.3$",
        dry_run,
        re.MULTILINE,
    )
