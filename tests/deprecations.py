"""A deprecation the project's own code triggers fails the run.

Lambda runs a newer Python than the tools, and CI runs the handler tests on it: a
DeprecationWarning there is the notice before a removal that would break a deployed
function. Only warnings attributed to files under the project's own folders count;
third-party libraries' deprecations stay warnings, theirs to fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN_CODE = (REPO / "opskit", REPO / "opskit_local", REPO / "stacks", REPO / "scripts")


class OwnDeprecations:
    """Collects the run's deprecations raised in `roots`; the run fails if there are any."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = tuple(root.resolve() for root in roots)
        self.found: dict[str, str] = {}

    def pytest_warning_recorded(
        self, warning_message: warnings.WarningMessage, nodeid: str
    ) -> None:
        if not issubclass(
            warning_message.category, (DeprecationWarning, PendingDeprecationWarning)
        ):
            return
        path = Path(warning_message.filename).resolve()
        if any(path.is_relative_to(root) for root in self.roots):
            where = f"{path}:{warning_message.lineno}"
            self.found.setdefault(where, f"{where}: {warning_message.message} ({nodeid})")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.found:
            terminalreporter.section("deprecations in the project's own code", red=True)
            for line in self.found.values():
                terminalreporter.line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.found and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def register(config: pytest.Config, roots: tuple[Path, ...] = OWN_CODE) -> None:
    """On the controlling process only: xdist relays its workers' warnings there."""
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(OwnDeprecations(roots), "own-deprecations")
