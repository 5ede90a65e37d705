"""The handler benchmarks still drive their handlers: each serves a handler from in-memory
fakes of the AWS clients, and a handler that starts calling something new breaks the
benchmark, not the handler's own tests. Only the API calls are checked here, which do not
depend on the machine; the timings are `make bench`'s to judge."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.synth import ROOT


def results(benchmark: str, *args: str) -> dict[str, tuple[str, str]]:
    """RESULT name -> (figure, verdict), from one sample of `benchmark`."""
    run = subprocess.run(
        [sys.executable, f"benchmarks/{benchmark}.py", "--samples", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = [line.split() for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    return {name: (figure, verdict) for _, name, figure, _, verdict in lines}


@pytest.mark.parametrize(
    ("benchmark", "args", "calls"),
    [
        ("backup_run", (), {"backup_listing_calls": "43"}),
        ("snapshot_cleanup", ("--volumes", "20"), {"snapshot_cleanup_listing_calls": "3"}),
        (
            "env_scheduler",
            (),
            {
                "env_scheduler_scale_down_requests": "612",
                "env_scheduler_scale_up_requests": "812",
                "env_scheduler_report_requests": "30",
            },
        ),
    ],
)
def test_each_handler_benchmark_runs_and_makes_the_calls_it_expects(benchmark, args, calls):
    found = results(benchmark, *args)
    assert {name: found.get(name) for name in calls} == {
        name: (count, "ok") for name, count in calls.items()
    }
