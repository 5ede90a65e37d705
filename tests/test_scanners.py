"""The template scanners' cache (tests/scanners.py): a report is replayed only for the
very scan that made it, so a cached scan fails exactly when a fresh one would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.scanners import Scan

FAKE_SCANNER = f"""#!{sys.executable}
import hashlib, sys
from pathlib import Path
log = Path(__file__).parent / "runs.log"
log.write_text(log.read_text() + "run\\n" if log.exists() else "run\\n")
for name in sys.argv[2:]:
    print(name, hashlib.sha256(Path(name).read_bytes()).hexdigest()[:8])
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def scanner(tmp_path) -> Path:
    """A scanner installed in a virtualenv of its own; it logs each run, prints each file's
    path and digest, and exits with its first argument."""
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages" / "fake_scanner-1.0.dist-info").mkdir(
        parents=True
    )
    (venv / "pyvenv.cfg").write_text("version = 3.11\n")
    executable = venv / "bin" / "fake-scanner"
    executable.parent.mkdir()
    executable.write_text(FAKE_SCANNER)
    executable.chmod(0o755)
    return executable


@pytest.fixture
def template(tmp_path) -> Path:
    file = tmp_path / "out" / "Stack.template.json"
    file.parent.mkdir()
    file.write_text('{"Resources": {}}')
    return file


def runs(scanner: Path) -> int:
    log = scanner.with_name("runs.log")
    return len(log.read_text().splitlines()) if log.exists() else 0


def scan(scanner: Path, template: Path, cache: Path | None, exit_code: int = 0):
    return Scan([str(scanner), str(exit_code)], [template], cache).result()


def test_the_same_scan_again_replays_the_report_without_running_the_scanner(
    scanner, template, tmp_path
):
    first = scan(scanner, template, tmp_path / "cache")
    again = scan(scanner, template, tmp_path / "cache")
    assert runs(scanner) == 1
    assert again == first
    assert first[1].split()[0].endswith("/Stack.template.json"), "a copy keeps the file's name"


def test_a_changed_template_is_scanned_afresh_and_its_old_report_dropped(
    scanner, template, tmp_path
):
    before = scan(scanner, template, tmp_path / "cache", exit_code=1)
    template.write_text('{"Resources": {"Queue": {}}}')
    after = scan(scanner, template, tmp_path / "cache", exit_code=1)
    assert runs(scanner) == 2
    assert before[1].split()[1] != after[1].split()[1]
    (reports,) = (tmp_path / "cache").iterdir()
    assert len(list(reports.iterdir())) == 1


def test_a_changed_scanner_or_argument_scans_afresh(scanner, template, tmp_path):
    scan(scanner, template, tmp_path / "cache")
    scan(scanner, template, tmp_path / "cache", exit_code=4)
    installed = scanner.parents[1] / "lib" / "python3.11" / "site-packages"
    (installed / "fake_scanner-1.0.dist-info").rename(installed / "fake_scanner-2.0.dist-info")
    scan(scanner, template, tmp_path / "cache", exit_code=4)
    assert runs(scanner) == 3


def test_a_scanner_configuration_in_the_working_directory_scans_afresh(
    scanner, template, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    scan(scanner, template, tmp_path / "cache")
    (tmp_path / ".cfnlintrc").write_text("ignore_checks: [W3005]\n")
    scan(scanner, template, tmp_path / "cache")
    scan(scanner, template, tmp_path / "cache")
    assert runs(scanner) == 2


def test_a_scanner_that_dies_without_a_report_is_not_kept(scanner, template, tmp_path):
    working = scanner.read_text()
    scanner.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(3)\n")
    assert scan(scanner, template, tmp_path / "cache") == (3, "", "")
    scanner.write_text(working)
    returncode, stdout, _ = scan(scanner, template, tmp_path / "cache")
    assert (returncode, runs(scanner)) == (0, 1)
    assert stdout


def test_without_a_cache_every_scan_runs_on_the_templates_themselves(scanner, template):
    first = scan(scanner, template, None)
    again = scan(scanner, template, None)
    assert runs(scanner) == 2
    assert first == again
    assert first[1].split()[0] == str(template)
