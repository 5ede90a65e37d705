"""A run fails on a deprecation the project's own code triggers, and only on those."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.deprecations import REPO, OwnDeprecations


def recorded(path: Path, category: type[Warning]) -> warnings.WarningMessage:
    return warnings.WarningMessage("gone in 3.15", category, str(path), 2)


def test_only_deprecations_raised_in_the_projects_folders_are_collected(tmp_path):
    own, vendor = tmp_path / "own", tmp_path / "vendor"
    plugin = OwnDeprecations((own,))

    plugin.pytest_warning_recorded(recorded(vendor / "lib.py", DeprecationWarning), "t::a")
    plugin.pytest_warning_recorded(recorded(own / "app.py", UserWarning), "t::b")
    plugin.pytest_warning_recorded(recorded(own / "app.py", PendingDeprecationWarning), "t::c")
    plugin.pytest_warning_recorded(recorded(own / "app.py", DeprecationWarning), "t::d")

    assert list(plugin.found.values()) == [f"{own / 'app.py'}:2: gone in 3.15 (t::c)"]


@pytest.mark.parametrize(
    ("found", "status", "expected"),
    [
        ({"a.py:1": "a.py:1: old"}, pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED),
        ({}, pytest.ExitCode.OK, pytest.ExitCode.OK),
        ({"a.py:1": "a.py:1: old"}, pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERRUPTED),
    ],
    ids=["fails-a-passing-run", "nothing-found", "keeps-a-worse-status"],
)
def test_a_run_that_passed_fails_when_any_was_collected(found, status, expected):
    plugin = OwnDeprecations(())
    plugin.found = dict(found)
    session = SimpleNamespace(exitstatus=status)

    plugin.pytest_sessionfinish(session)  # type: ignore[arg-type]

    assert session.exitstatus == expected


def test_under_xdist_the_run_fails_and_names_the_line_in_the_projects_code(tmp_path):
    """End to end, as `make test` runs: workers relay their warnings to the controller."""
    for folder in ("own", "vendor"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}_module.py").write_text(
            "import warnings\nwarnings.warn('gone in 3.15', DeprecationWarning)\n"
        )
        (tmp_path / f"test_{folder}.py").write_text(
            f"def test_imports():\n    import {folder}_module\n"
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

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    summary = result.stdout.split("deprecations in the project's own code", 1)[1]
    assert "own_module.py:2: gone in 3.15" in summary
    assert "vendor_module" not in summary, "a third-party deprecation stays a warning"
