"""`make invoke` of the deployment notifier with `make local` running, over `import boto3`.

What a developer waits for: the whole command, make included, from its start to its exit
(the notifier reads its webhook secret from the emulator and posts its default sample
event to the webhook stand-in), against a fresh `python -c "import boto3"`. The two run
in turn, and the ratio is taken pair by pair (the median of the pairs' ratios), so that
drift on a shared machine moves both sides of a pair alike.

Uses a running `make local` for dev if there is one, else starts one (and stops it
after). One untimed `make invoke` first synthesizes the template if it is stale.

    .venv/bin/python benchmarks/local_invoke.py [--samples 21]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opskit_local import state  # noqa: E402  (the state file `make local` writes)

MAX_RATIO = 3.0
INVOKE = ["make", "--no-print-directory", "invoke", "FN=notification"]
BASELINE = [sys.executable, "-c", "import boto3"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def make_local() -> subprocess.Popen[str] | None:
    """A `make local` for dev, or None when one runs already."""
    running = state.read()
    if running is not None:
        if running.environment != "dev":
            raise SystemExit(f"`make local` runs {running.environment}; stop it or run it for dev")
        print(f"using the running `make local` (process {running.pid})")
        return None
    server = subprocess.Popen(
        [sys.executable, "-m", "opskit_local.serve", "--env", "dev"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while state.read() is None:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f"make local did not start:\n{server.stderr.read() if server.stderr else ''}"
            )
        time.sleep(0.1)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()

    timed(INVOKE)  # untimed: synthesizes the template if its sources changed
    server = make_local()
    try:
        timed(INVOKE)
        timed(BASELINE)
        invokes: list[float] = []
        baselines: list[float] = []
        for i in range(args.samples):
            pair = [(INVOKE, invokes), (BASELINE, baselines)]
            for command, times in pair if i % 2 == 0 else reversed(pair):
                times.append(timed(command))
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)

    ratios = [a / b for a, b in zip(invokes, baselines, strict=True)]
    ratio = statistics.median(ratios)
    print(f"samples per side:                 {args.samples} (alternating)")
    print(f"make invoke FN=notification:      median {statistics.median(invokes) * 1000:6.0f} ms")
    print(f'python -c "import boto3":         median {statistics.median(baselines) * 1000:6.0f} ms')
    spread = f"min {min(ratios):.2f}  max {max(ratios):.2f}"
    print(f"ratio (median of pair ratios):    {ratio:.2f}  {spread}")
    verdict = "ok" if ratio <= MAX_RATIO else "missed"
    print(f"target <= {MAX_RATIO}: {verdict}")
    print(f"RESULT local_invoke_ratio {ratio:.2f} {MAX_RATIO} {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    os.environ.pop("OPSKIT_LOCAL_STATE", None)
    sys.exit(main())
