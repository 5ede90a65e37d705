"""Wall time of the test suite, run the way the README and CI run it: ``make test``.

``make setup`` and one ``make test`` run first, untimed, so the figure is the suite's
second run, as the standing budget counts it: not the one-off installation of the
pinned Python and Node dependencies, the scanners' virtualenv, the wheelhouse or the
bytecode caches. Then ``make test`` is timed (once by default). The output of make is
captured; the pytest summary line is printed with each sample, and the whole output only
when the suite fails. The figure is the median wall time. Exits non-zero if the target
is missed or the suite fails.

    .venv/bin/python benchmarks/suite_time.py [--samples 1]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MAX_SECONDS = 90.0

# "==== 236 passed, 1 skipped in 41.32s ====" (or without the rule, under -q)
SUMMARY = re.compile(r"^=*\s*(\d+ \w+.* in [\d.]+s.*?)\s*=*$")


def make(target: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(["make", target], cwd=REPO, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, result


def summary(output: str) -> str:
    """The last pytest summary line in ``output``, without its ``=`` rule."""
    for line in reversed(output.splitlines()):
        match = SUMMARY.match(line.strip())
        if match:
            return match.group(1)
    return "(no pytest summary line found)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()

    _, setup = make("setup")
    if setup.returncode != 0:
        print(f"make setup failed ({setup.returncode}):\n{setup.stdout}{setup.stderr}")
        print(f"RESULT suite_time_s failed {MAX_SECONDS:g} missed")
        return 1

    elapsed, warm_up = make("test")
    print(f"warm-up: make test {elapsed:6.1f} s   {summary(warm_up.stdout)}")
    times: list[float] = []
    for i in range(args.samples):
        elapsed, result = make("test")
        print(f"sample {i + 1}: make test {elapsed:6.1f} s   {summary(result.stdout)}")
        if result.returncode != 0:
            print(f"make test failed ({result.returncode}):\n{result.stdout}{result.stderr}")
            print(f"RESULT suite_time_s failed {MAX_SECONDS:g} missed")
            return 1
        times.append(elapsed)

    median = statistics.median(times)
    ok = median <= MAX_SECONDS
    print(f"samples:               {args.samples} (after make setup and one make test)")
    verdict = "ok" if ok else "MISSED"
    print(f"make test wall time:   median {median:.1f} s  (target <= {MAX_SECONDS:g} s)  {verdict}")
    print(f"RESULT suite_time_s {median:.1f} {MAX_SECONDS:g} {'ok' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
