"""What security teams gate CDK output on, run by the tests: cdk-nag v3 at synth time, and
cfn-lint with AWS's serverless rules and checkov over templates, as background processes so
the slow ones run side by side."""

from __future__ import annotations

import json
import os
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
    """A command started in the background; `result()` waits for it."""

    def __init__(self, command: list[str], output: Path | None = None, **options: Any) -> None:
        self.output = output
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
        )

    def result(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=300)
        return self.process.returncode, stdout, stderr


def cfn_lint(files: Iterable[Path]) -> Scan:
    """cfn-lint with AWS's serverless rules, one finding per line. W3005 (an explicit
    DependsOn that a GetAtt also implies) is how CDK orders IAM policies."""
    return Scan(
        [
            str(Path(sys.executable).with_name("cfn-lint")),
            *("--append-rules", "cfn_lint_serverless.rules"),
            *("--format", "parseable", "--ignore-checks", "W3005", "--"),
            *map(str, files),
        ]
    )


def checkov(files: Iterable[Path]) -> Scan:
    """checkov's CloudFormation framework, JSON out; it lives in .venv-scan (its own pins
    clash with the app's)."""
    scanner = ROOT / ".venv-scan" / "bin" / "checkov"
    assert scanner.exists(), "checkov lives in .venv-scan: run `make test` (or `make scan`) once"
    return Scan(
        [
            str(scanner),
            *("--framework", "cloudformation", "--skip-download", "--output", "json"),
            *(arg for file in files for arg in ("--file", str(file))),
        ],
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )


def checkov_results(scan: Scan) -> dict[str, Any]:
    """checkov's passed, failed and skipped checks."""
    _, stdout, stderr = scan.result()
    assert stdout.strip(), stderr
    document = json.loads(stdout)
    return (document[0] if isinstance(document, list) else document)["results"]  # type: ignore[no-any-return]
