"""An environment's synthesized template, kept in ``.opskit-local/`` until its sources change.

Synthesis runs ``app.py`` as the CDK CLI does (context in ``CDK_CONTEXT_JSON``), with
bundling and CDK's built-in template validation skipped (assets play no part in what local
invoke reads, and nothing is deployed), in a process of its own, and takes a few seconds.
The template is then kept with a fingerprint of what it was made from (cdk.json, app.py,
requirements.txt, stacks/ and opskit's constructs: not the handlers, which the template
does not contain), and used until one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from opskit_local.errors import LocalError, exit_code
from opskit_local.functions import REPO

STATE_ENV = "OPSKIT_LOCAL_STATE"
"""A folder for the local state instead of ``.opskit-local`` in the repository."""


def state_dir() -> Path:
    configured = os.environ.get(STATE_ENV)
    return Path(configured).absolute() if configured else REPO / ".opskit-local"


def sources() -> list[Path]:
    """What the template is made from."""
    found = [REPO / "cdk.json", REPO / "app.py", REPO / "requirements.txt"]
    found += sorted((REPO / "stacks").glob("*.py"))
    found += sorted((REPO / "opskit").glob("*.py"))
    found += sorted((REPO / "opskit" / "constructs").rglob("*.py"))
    return found


def fingerprint() -> str:
    """Changes when any source does (by size and modification time: no file is read)."""
    digest = hashlib.sha256()
    for path in sources():
        stat = path.stat()
        digest.update(f"{path.relative_to(REPO)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def load(environment: str, *, log: Any = sys.stderr) -> dict[str, Any]:
    """The environment's template: the kept copy if its sources are unchanged, else anew."""
    folder = state_dir()
    kept = folder / f"{environment}.template.json"
    stamp = folder / f"{environment}.fingerprint"
    current = fingerprint()
    if kept.is_file() and stamp.is_file() and stamp.read_text() == current:
        return json.loads(kept.read_text())  # type: ignore[no-any-return]
    print(f"opskit local: synthesizing {environment} (kept until its sources change)", file=log)
    template = synthesize(environment)
    folder.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(template, indent=1))
    stamp.write_text(current)
    return template


def synthesize(environment: str) -> dict[str, Any]:
    """Runs app.py for `environment`, bundling skipped, and reads the stack's template."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    context.update({"environment": environment, "aws:cdk:bundling-stacks": []})
    with tempfile.TemporaryDirectory(prefix="opskit-local-synth-") as outdir:
        result = subprocess.run(
            [sys.executable, str(REPO / "app.py")],
            cwd=REPO,
            env={
                **os.environ,
                "CDK_CONTEXT_JSON": json.dumps(context),
                "CDK_OUTDIR": outdir,
                "CDK_VALIDATION": "false",  # nothing is deployed: CDK's template checks are moot
            },
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = next((line for line in lines if line.startswith("opskit: ")), None)
            reason = reason or (lines[-1] if lines else f"exit {result.returncode}")
            raise LocalError(f"synthesizing {environment} failed: {reason.strip()}")
        manifest = json.loads(Path(outdir, "manifest.json").read_text())
        stacks = [
            artifact["properties"]["templateFile"]
            for artifact in manifest["artifacts"].values()
            if artifact.get("type") == "aws:cloudformation:stack"
        ]
        if len(stacks) != 1:
            raise LocalError(f"synthesizing {environment} gave {len(stacks)} stacks; expected 1")
        return json.loads(Path(outdir, stacks[0]).read_text())  # type: ignore[no-any-return]


def read(path: str | Path) -> dict[str, Any]:
    """A template from a file (`cdk synth` output), for TEMPLATE=."""
    try:
        return json.loads(Path(path).read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise LocalError(f"template file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise LocalError(f"template file {path} is not JSON: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m opskit_local.template --env dev``: the kept template, synthesized if stale."""
    import argparse

    parser = argparse.ArgumentParser(description="Keep an environment's template for make invoke.")
    parser.add_argument("--env", default="dev")
    args = parser.parse_args(argv)

    def keep() -> int:
        load(args.env)
        return 0

    return exit_code(keep)


if __name__ == "__main__":
    sys.exit(main())
