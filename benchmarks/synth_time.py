"""Wall time of synthesizing the prod stacks, compared with synthesizing an empty CDK app.

Both sides run the same pinned CLI from the repository root (so both read cdk.json and
pay for the CLI, Node and the jsii runtime alike); the difference is what this library
adds on top of any CDK app:

- prod:  ``npx --no-install cdk synth --context environment=prod --quiet --output <A>``;
- empty: the same command with ``--app "<venv python> <tmp>/empty_app.py"`` and output
  ``<B>``, where empty_app.py is ``cdk.App()`` with one empty ``cdk.Stack`` (the CLI
  refuses an app without stacks).

One warm-up of each comes first: the first prod synth bundles the Lambda assets, and
later runs reuse the staged assets in the same output folder, as repeated synths do.
Samples then alternate between the two sides so drift affects both alike. Child output
is captured and shown only when a run fails. Exits non-zero if the target is missed.

    .venv/bin/python benchmarks/synth_time.py [--samples 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PATH_PREFIX = [
    REPO / "tools" / "node22" / "node_modules" / ".bin",
    REPO / "node_modules" / ".bin",
    REPO / ".venv" / "bin",
]

MAX_RATIO = 1.6

EMPTY_APP = """\
import aws_cdk as cdk

app = cdk.App()
cdk.Stack(app, "Empty")
app.synth()
"""


def environment() -> dict[str, str]:
    """The Makefile's environment: Node 22 first on PATH (for jsii), then the CLI and venv."""
    prefix = [str(path) for path in PATH_PREFIX if path.is_dir()]
    env = dict(os.environ, CDK_DISABLE_CLI_TELEMETRY="true")
    env["PATH"] = os.pathsep.join([*prefix, env.get("PATH", "")])
    return env


def timed(command: list[str], env: dict[str, str]) -> float:
    """Seconds of wall time for one run of ``command`` from the repository root."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print(f"failed ({result.returncode}): {' '.join(command)}")
        print(result.stdout + result.stderr)
        raise SystemExit(1)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()

    env = environment()
    cdk = ["npx", "--no-install", "cdk", "synth", "--quiet"]
    with tempfile.TemporaryDirectory(prefix="opskit-bench-synth-") as scratch:
        app = Path(scratch, "empty_app.py")
        app.write_text(EMPTY_APP)
        prod = [*cdk, "--context", "environment=prod", "--output", str(Path(scratch, "A"))]
        empty = [*cdk, "--app", f"{VENV_PYTHON} {app}", "--output", str(Path(scratch, "B"))]

        print(f"warm-up: prod {timed(prod, env):5.2f} s   empty {timed(empty, env):5.2f} s")
        prod_times: list[float] = []
        empty_times: list[float] = []
        for i in range(args.samples):
            pair = [(prod, prod_times), (empty, empty_times)]
            for command, times in pair if i % 2 == 0 else reversed(pair):
                times.append(timed(command, env))
            print(f"sample {i + 1}: prod {prod_times[-1]:5.2f} s   empty {empty_times[-1]:5.2f} s")

    prod_median = statistics.median(prod_times)
    empty_median = statistics.median(empty_times)
    ratio = prod_median / empty_median
    ok = ratio <= MAX_RATIO
    print(f"samples per side:      {args.samples} (after one warm-up each, alternating)")
    print(f"prod synth:            median {prod_median:5.2f} s")
    print(f"empty app synth:       median {empty_median:5.2f} s")
    verdict = "ok" if ok else "MISSED"
    print(f"ratio prod / empty:    {ratio:.2f}  (target <= {MAX_RATIO})  {verdict}")
    print(f"RESULT synth_time_ratio {ratio:.2f} {MAX_RATIO} {'ok' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
