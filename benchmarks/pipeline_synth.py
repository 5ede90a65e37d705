"""Wall time of synthesizing the delivery pipeline, compared with synthesizing an empty CDK app.

`npx --no-install cdk synth --context pipeline=true --quiet` builds the pipeline stack and,
in its stages, every environment's stacks (dev, staging, prod); the empty side is the
same CLI on `cdk.App()` with one empty stack. Same machinery as synth_time.py (one
warm-up each, which bundles the assets once; alternating samples; median ratio). Exits
non-zero if the target is missed.

    .venv/bin/python benchmarks/pipeline_synth.py [--samples 5]
"""

from __future__ import annotations

import argparse
import sys

from synth_time import measure, report

MAX_RATIO = 2.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    measurement = measure("pipeline", ["--context", "pipeline=true"], samples=args.samples)
    return report(measurement, name="pipeline_synth_ratio", max_ratio=MAX_RATIO)


if __name__ == "__main__":
    sys.exit(main())
