"""Cold-start cost of the deployment notifier, compared with the bare boto3 baseline.

Each sample runs in a fresh interpreter and times, inside that interpreter, only the
work Lambda's init phase (plus the first invocation) would do:

- baseline: ``import boto3`` and one ``boto3.client("secretsmanager")``;
- notifier: ``import app`` and the client creation the handler performs on first use.

The function and layer code are copied to scratch folders laid out like /var/task and
/opt/python, both put on ``sys.path`` for both sides (as Lambda does for every function),
and run without writing bytecode: a Lambda deployment package has no ``__pycache__``
and /var/task is read-only, so the handler is compiled at every cold start. Samples
alternate between the two sides so drift affects both alike.

Also reports the zipped size of the notifier asset. Exits non-zero if a target is missed.

    .venv/bin/python benchmarks/notifier_init.py [--samples 31]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opskit.bundling import EXCLUDED  # noqa: E402  (the asset rules the bundler applies)

FUNCTION_DIR = REPO / "opskit" / "functions" / "notification"
LAYER_DIR = REPO / "opskit" / "layers" / "common" / "python"

MAX_RATIO = 1.2
MAX_ZIP_BYTES = 50 * 1024

BASELINE = """
import sys, time
sys.path[:0] = [{task!r}, {opt!r}]
t0 = time.perf_counter()
import boto3
boto3.client("secretsmanager")
print(time.perf_counter() - t0)
"""

NOTIFIER = """
import sys, time
sys.path[:0] = [{task!r}, {opt!r}]
t0 = time.perf_counter()
import app
from opskit_common.clients import client
client("secretsmanager")
print(time.perf_counter() - t0)
"""


def zipped_size(folder: Path) -> int:
    """Bytes of a deflated zip of ``folder``, leaving out what the bundler leaves out."""
    ignored = shutil.ignore_patterns("requirements.txt", *EXCLUDED)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            parts = path.relative_to(folder).parts
            if path.is_file() and not any(ignored("", list(parts))):
                archive.write(path, path.relative_to(folder).as_posix())
    return len(buffer.getvalue())


def sample(code: str, env: dict[str, str]) -> float:
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"sample failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=31)
    args = parser.parse_args()

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
        WEBHOOK_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:webhook-AbCdEf",
        WEBHOOK_FORMAT="slack",
        POWERTOOLS_LOG_LEVEL="INFO",
        PYTHONDONTWRITEBYTECODE="1",
    )

    with tempfile.TemporaryDirectory(prefix="opskit-bench-") as scratch:
        task, opt = Path(scratch, "task"), Path(scratch, "opt")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(FUNCTION_DIR, task, ignore=ignore)
        shutil.copytree(LAYER_DIR, opt, ignore=ignore)
        notifier = NOTIFIER.format(task=str(task), opt=str(opt))
        baseline = BASELINE.format(task=str(task), opt=str(opt))

        sample(baseline, env)  # warm the OS file cache for both sides
        sample(notifier, env)
        baseline_times: list[float] = []
        notifier_times: list[float] = []
        for i in range(args.samples):
            pair = [(baseline, baseline_times), (notifier, notifier_times)]
            for code, times in pair if i % 2 == 0 else reversed(pair):
                times.append(sample(code, env))

    baseline_median = statistics.median(baseline_times)
    notifier_median = statistics.median(notifier_times)
    ratio = notifier_median / baseline_median
    asset = zipped_size(FUNCTION_DIR)
    layer = zipped_size(LAYER_DIR)

    print(f"samples per side:           {args.samples} (fresh interpreter each, alternating)")
    print(f"baseline boto3 + client:    median {baseline_median * 1000:7.1f} ms")
    print(f"notifier import + client:   median {notifier_median * 1000:7.1f} ms")
    verdict = "ok" if ratio <= MAX_RATIO else "MISSED"
    print(f"ratio notifier / baseline:  {ratio:.3f}  (target <= {MAX_RATIO})  {verdict}")
    verdict = "ok" if asset <= MAX_ZIP_BYTES else "MISSED"
    print(f"notifier asset, zipped:     {asset / 1024:.1f} KB  (target <= 50 KB)  {verdict}")
    print(f"common layer, zipped:       {layer / 1024:.1f} KB  (informational)")
    for name, figure, target, ok in [
        ("notifier_init_ratio", f"{ratio:.3f}", MAX_RATIO, ratio <= MAX_RATIO),
        ("notifier_asset_kb", f"{asset / 1024:.1f}", MAX_ZIP_BYTES // 1024, asset <= MAX_ZIP_BYTES),
    ]:
        print(f"RESULT {name} {figure} {target} {'ok' if ok else 'missed'}")
    return 0 if ratio <= MAX_RATIO and asset <= MAX_ZIP_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
