"""A run fails on a deprecation the project's own code triggers, and only on those."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.deprecations import REPO


def run_pytest(tmp_path: Path, warner: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on a project whose own code is tmp_path/own and whose one test imports
    `warner` (a module in own/ or in vendor/) that warns as it is imported."""
    for folder in ("own", "vendor"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}_module.py").write_text(
            "import warnings\nwarnings.warn('gone in 3.15', DeprecationWarning)\n"
        )
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path[:0] = [{str(REPO)!r}, {str(tmp_path / "own")!r}, {str(tmp_path / "vendor")!r}]
            from tests import deprecations

            def pytest_configure(config):
                deprecations.register(config, (Path({str(tmp_path / "own")!r}),))
            """
        )
    )
    (tmp_path / "test_it.py").write_text(f"def test_imports():\n    import {warner}\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["in-process", "xdist"])
def test_a_deprecation_in_the_projects_own_code_fails_the_run(tmp_path, workers):
    result = run_pytest(tmp_path, "own_module", *workers)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "deprecations in the project's own code" in result.stdout
    assert "own_module.py:2: gone in 3.15" in result.stdout


def test_a_third_party_deprecation_stays_a_warning(tmp_path):
    result = run_pytest(tmp_path, "vendor_module")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "gone in 3.15" in result.stdout, "pytest still shows it"
