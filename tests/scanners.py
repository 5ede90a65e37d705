"""What security teams gate CDK output on, run by the tests: cdk-nag v3 at synth time, and
cfn-lint with AWS's serverless rules and checkov over templates, as background processes so
the slow ones run side by side, their reports kept until the templates or scanners change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from tests.synth import ROOT


def synthesize_with_rule_packs(app: cdk.App, stack: cdk.Stack) -> dict[str, Any]:
    """Synthesizes under cdk-nag v3's AwsSolutions and Serverless packs; returns the report."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(), ServerlessChecks())
    try:
        assembly = app.synth()
        outdir = Path(assembly.directory)
    except RuntimeError as error:
        assert "ValidationFailed" in str(error), error
        outdir = Path(app.outdir)
    report = outdir / "validation-report.json"
    return json.loads(report.read_text()) if report.exists() else {"pluginReports": []}


class Scan:
    """A scanner started in the background over templates; `result()` waits for it.

    A scanner's report depends only on its installation, its arguments, its configuration
    file in the working directory, if any, and the templates' bytes. Given a cache
    directory (pytest's), a scan is named by a hash of those and runs over copies of the
    templates kept under that name; its report is stored beside them, and the same scan
    later replays it, paths included. A change to any of them scans afresh; a scanner that
    dies without a report is not kept.
    """

    def __init__(
        self,
        command: list[str],
        files: Iterable[Path],
        cache: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        files = list(files)
        self.entry = cache / _scan_name(command, files) if cache else None
        self.process: subprocess.Popen[str] | None = None
        if self.entry and (self.entry / REPORT).exists():
            return
        if self.entry:
            files = _copies(files, self.entry)
        self.process = subprocess.Popen(
            [*command, *map(str, files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def result(self) -> tuple[int, str, str]:
        if self.process is None:
            assert self.entry
            report = json.loads((self.entry / REPORT).read_text())
            return report["returncode"], report["stdout"], report["stderr"]
        stdout, stderr = self.process.communicate(timeout=300)
        returncode = self.process.returncode
        if self.entry and returncode >= 0 and (returncode == 0 or stdout.strip()):
            _keep_only(self.entry)
            report = {"returncode": returncode, "stdout": stdout, "stderr": stderr}
            _write_atomically(self.entry / REPORT, json.dumps(report).encode())
        return returncode, stdout, stderr


REPORT = "report.json"
CONFIG_FILES = (".cfnlintrc", ".cfnlintrc.yaml", ".cfnlintrc.yml", ".checkov.yaml", ".checkov.yml")
"""What cfn-lint and checkov read from the working directory when it is there."""


def _scan_name(command: list[str], files: list[Path]) -> str:
    """`<scanner>-<digest of the file names>/<digest of everything the report depends on>`."""
    executable = Path(command[0])
    environment = executable.parent.parent
    installed = sorted(p.name for p in environment.glob("lib/python*/site-packages/*.dist-info"))
    interpreter = environment / "pyvenv.cfg"
    digest = hashlib.sha256()
    for part in (*command, interpreter.read_text() if interpreter.exists() else "", *installed):
        digest.update(part.encode() + b"\0")
    for config in (Path(name) for name in CONFIG_FILES):
        if config.is_file():
            digest.update(config.name.encode() + b"\0" + config.read_bytes() + b"\0")
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    names = hashlib.sha256("\0".join(f.name for f in files).encode()).hexdigest()[:12]
    return f"{executable.name}-{names}/{digest.hexdigest()[:32]}"


def _copies(files: list[Path], entry: Path) -> list[Path]:
    copies = []
    for index, file in enumerate(files):
        copy = entry / "templates" / str(index) / file.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(copy, file.read_bytes())
        copies.append(copy)
    return copies


def _keep_only(entry: Path) -> None:
    """Drops the reports of earlier versions of the same templates: one per scan."""
    for other in entry.parent.iterdir():
        if other != entry:
            shutil.rmtree(other, ignore_errors=True)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


def cfn_lint(files: Iterable[Path], cache: Path | None = None) -> Scan:
    """cfn-lint with AWS's serverless rules, one finding per line. W3005 (an explicit
    DependsOn that a GetAtt also implies) is how CDK orders IAM policies."""
    return Scan(
        [
            str(Path(sys.executable).with_name("cfn-lint")),
            *("--append-rules", "cfn_lint_serverless.rules"),
            *("--format", "parseable", "--ignore-checks", "W3005", "--"),
        ],
        files,
        cache,
    )


def checkov(files: Iterable[Path], cache: Path | None = None) -> Scan:
    """checkov's CloudFormation framework, JSON out without code blocks (each check would
    carry the whole of a template written on one line: hundreds of MB); it lives in
    .venv-scan (its own pins clash with the app's)."""
    scanner = ROOT / ".venv-scan" / "bin" / "checkov"
    assert scanner.exists(), "checkov lives in .venv-scan: run `make test` (or `make scan`) once"
    return Scan(
        [
            str(scanner),
            *("--framework", "cloudformation", "--skip-download", "--compact"),
            *("--output", "json", "--file"),
        ],
        files,
        cache,
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )


def checkov_results(scan: Scan) -> dict[str, Any]:
    """checkov's passed, failed and skipped checks."""
    _, stdout, stderr = scan.result()
    assert stdout.strip(), stderr
    document = json.loads(stdout)
    return (document[0] if isinstance(document, list) else document)["results"]  # type: ignore[no-any-return]
