"""Cold starts measured the way Lambda pays them, for notifier_init.py and user_api.py.

Each sample is a fresh interpreter that times, inside itself, only what an init phase
(plus a first invocation) does. The function and layer code are copied to scratch
folders laid out like /var/task and /opt/python, both on ``sys.path`` for every side, and
nothing writes bytecode: a deployment package has no ``__pycache__`` and /var/task is
read-only, so Lambda compiles the handler at every cold start. Sides alternate from
sample to sample so drift affects all alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

_TIMED = """
import sys, time
sys.path[:0] = [{task!r}, {opt!r}]
t0 = time.perf_counter()
{init}
print(time.perf_counter() - t0)
"""

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")


def lambda_environment(**variables: str) -> dict[str, str]:
    """This process's environment without AWS, Python or Powertools settings, plus what
    Lambda sets (a region, a function name, its runtime interface), throwaway credentials,
    INFO logs, no bytecode, and ``variables``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "PYTHON", "POWERTOOLS_"))
    }
    env.update(
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="benchmark",
        AWS_SECRET_ACCESS_KEY="benchmark",
        AWS_LAMBDA_FUNCTION_NAME="benchmark",
        AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001",
        POWERTOOLS_LOG_LEVEL="INFO",
        PYTHONDONTWRITEBYTECODE="1",
        **variables,
    )
    return env


@contextmanager
def sandbox(function_dir: Path, layer_dirs: Mapping[Path, str]) -> Iterator[tuple[Path, Path]]:
    """(/var/task, /opt/python) look-alikes: the function, and each layer folder copied
    under the name given (``""``: its contents at the top)."""
    with tempfile.TemporaryDirectory(prefix="opskit-bench-") as scratch:
        task, opt = Path(scratch, "task"), Path(scratch, "opt")
        shutil.copytree(function_dir, task, ignore=_IGNORED)
        for layer_dir, name in layer_dirs.items():
            shutil.copytree(layer_dir, opt / name, ignore=_IGNORED, dirs_exist_ok=True)
        yield task, opt


def timed(init: str, task: Path, opt: Path) -> str:
    """A program that prints how long ``init`` (Python statements) takes."""
    return _TIMED.format(task=str(task), opt=str(opt), init=init)


def sample(code: str, env: dict[str, str]) -> float:
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"sample failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def alternating(
    programs: Mapping[str, str], env: dict[str, str], samples: int
) -> dict[str, list[float]]:
    """`samples` seconds per program, after one untimed run each (the OS file cache)."""
    for code in programs.values():
        sample(code, env)
    times: dict[str, list[float]] = {name: [] for name in programs}
    order = list(programs)
    for i in range(samples):
        for name in order if i % 2 == 0 else reversed(order):
            times[name].append(sample(programs[name], env))
    return times
