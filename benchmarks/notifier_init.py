"""Cold-start cost of the deployment notifier, compared with the bare boto3 baseline.

Measured as cold_start.py describes (a fresh interpreter per sample, Lambda's folders, no
bytecode, alternating sides):

- baseline: ``import boto3`` and one ``boto3.client("secretsmanager")``;
- notifier: ``import app`` and the client creation the handler performs on first use.

Also reports the zipped size of the notifier asset. Exits non-zero if a target is missed.

    .venv/bin/python benchmarks/notifier_init.py [--samples 31]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cold_start import alternating, lambda_environment, sandbox, timed  # noqa: E402
from opskit.bundling import EXCLUDED  # noqa: E402  (the asset rules the bundler applies)

FUNCTION_DIR = REPO / "opskit" / "functions" / "notification"
LAYER_DIR = REPO / "opskit" / "layers" / "common" / "python"

MAX_RATIO = 1.2
MAX_ZIP_BYTES = 50 * 1024


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=31)
    args = parser.parse_args()

    env = lambda_environment(
        WEBHOOK_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:webhook-AbCdEf",
        WEBHOOK_FORMAT="slack",
    )
    with sandbox(FUNCTION_DIR, {LAYER_DIR: ""}) as (task, opt):
        programs = {
            "baseline": timed('import boto3\nboto3.client("secretsmanager")', task, opt),
            "notifier": timed(
                'import app\nfrom opskit_common.clients import client\nclient("secretsmanager")',
                task,
                opt,
            ),
        }
        times = alternating(programs, env, args.samples)
    baseline_times, notifier_times = times["baseline"], times["notifier"]

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
