"""Run every benchmark and summarize: ``make bench``.

Each benchmark runs as a subprocess with this Python, its output streamed as it comes.
A benchmark reports each figure on a final line ``RESULT <name> <figure> <target>
<ok|missed>`` (targets are upper bounds); those lines make the summary table. Exits
non-zero if any target is missed or any benchmark fails without reporting.

    .venv/bin/python benchmarks/run.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "notifier_init",
    "backup_run",
    "snapshot_cleanup",
    "env_scheduler",
    "user_api",
    "log_processor",
    "local_invoke",
    "synth_time",
    "pipeline_synth",
    "suite_time",
]


def run(name: str) -> tuple[int, list[list[str]]]:
    """Run one benchmark, echoing its output; return its exit code and RESULT fields."""
    print(f"\n=== {name} ===", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results: list[list[str]] = []
    with subprocess.Popen(
        [sys.executable, str(HERE / f"{name}.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            fields = line.split()
            if len(fields) == 5 and fields[0] == "RESULT":
                results.append(fields[1:])
    return process.returncode, results


def main() -> int:
    rows: list[list[str]] = []
    for name in BENCHMARKS:
        code, results = run(name)
        rows.extend(results)
        reported_miss = any(verdict != "ok" for *_, verdict in results)
        if not results or (code != 0 and not reported_miss):  # crashed or said nothing
            rows.append([name, f"exit {code}", "-", "missed"])

    print("\n=== summary ===")
    table = [["benchmark", "figure", "target (<=)", "verdict"]]
    for name, figure, target, verdict in rows:
        table.append([name, figure, target, "ok" if verdict == "ok" else "MISSED"])
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0 if all(row[3] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
