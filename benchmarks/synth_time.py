"""Wall time of synthesizing the prod stacks, compared with synthesizing an empty CDK app.

Both sides run the same pinned CLI from the repository root (so both read cdk.json and
pay for the CLI, Node and the jsii runtime alike); the difference is what this library
adds on top of any CDK app:

- prod:  ``npx --no-install cdk synth --context environment=prod --quiet --output <A>``;
- empty: the same command with ``--app "<venv python> <tmp>/empty_app.py"`` and output
  ``<B>``, where empty_app.py is ``cdk.App()`` with one empty ``cdk.Stack`` (the CLI
  refuses an app without stacks).

A third side, for information, is the template floor: an app whose one stack includes
the prod template (``CfnInclude``, a single call into the jsii runtime) and acknowledges
the same CloudFormation Validate findings. It pays what the template itself costs any
CDK app (resolving, CDK's built-in template validation, writing), and nothing for
building constructs: what is left of the budget for the constructs is its distance to
the target.

One warm-up of each comes first: the first prod synth bundles the Lambda assets, and
later runs reuse the staged assets in the same output folder, as repeated synths do.
Samples then alternate between the two sides so drift affects both alike. Child output
is captured and shown only when a run fails. Exits non-zero if the target is missed.
`measure` and `report` serve the other synth benchmarks (pipeline_synth.py) too.

    .venv/bin/python benchmarks/synth_time.py [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PATH_PREFIX = [
    REPO / "tools" / "node22" / "node_modules" / ".bin",
    REPO / "node_modules" / ".bin",
    REPO / ".venv" / "bin",
]

MAX_RATIO = 1.5

EMPTY_APP = """\
import aws_cdk as cdk

app = cdk.App()
cdk.Stack(app, "Empty")
app.synth()
"""


def environment() -> dict[str, str]:
    """The Makefile's environment: Node 22 first on PATH (for jsii), then the CLI and venv;
    Python caches bytecode."""
    prefix = [str(path) for path in PATH_PREFIX if path.is_dir()]
    env = dict(os.environ, CDK_DISABLE_CLI_TELEMETRY="true")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
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


FLOOR_APP = """\
import json
import sys

import aws_cdk as cdk
from aws_cdk import cloudformation_include

app = cdk.App()
stack = cdk.Stack(app, "Floor")
cloudformation_include.CfnInclude(stack, "Template", template_file=sys.argv[1])
for rule in json.loads(sys.argv[2]):
    cdk.Validations.of(stack).acknowledge(cdk.Acknowledgment(id=rule, reason="as the app does"))
app.synth()
"""

SYNTHESIZER_ADDS = {
    "Resources": "CDKMetadata",
    "Conditions": "CDKMetadataAvailable",
    "Parameters": "BootstrapVersion",
    "Rules": "CheckBootstrapVersion",
}
"""What every stack's synthesis adds to a template, so the floor's own synth adds it again."""


@dataclass(frozen=True)
class Measurement:
    """Wall times of one app's synth and of the empty app's, sampled side by side; and of
    the template floor's, where measured."""

    label: str
    times: list[float]
    empty_times: list[float]
    floor_times: list[float] | None = None

    @property
    def ratio(self) -> float:
        return statistics.median(self.times) / statistics.median(self.empty_times)

    @property
    def floor_ratio(self) -> float | None:
        if not self.floor_times:
            return None
        return statistics.median(self.floor_times) / statistics.median(self.empty_times)

    @property
    def over_floor(self) -> float | None:
        """What building the constructs costs on top of the template they make."""
        if not self.floor_times:
            return None
        return statistics.median(self.times) / statistics.median(self.floor_times)


def floor_command(scratch: Path, synthesized: Path) -> list[str]:
    """The CLI synthesizing the floor app over the one template in `synthesized`."""
    [template_file] = synthesized.glob("*.template.json")
    template = json.loads(template_file.read_text())
    for section, name in SYNTHESIZER_ADDS.items():
        template.get(section, {}).pop(name, None)
    included = Path(scratch, "floor.template.json")
    included.write_text(json.dumps({k: v for k, v in template.items() if v != {}}))
    report = json.loads(Path(synthesized, "validation-report.json").read_text())
    acknowledged = sorted(
        {
            violation["acknowledgedId"]
            for plugin in report.get("pluginReports", [])
            for violation in plugin.get("suppressedViolations", [])
        }
    )
    app = Path(scratch, "floor_app.py")
    app.write_text(FLOOR_APP)
    command = f"{VENV_PYTHON} {app} {included} '{json.dumps(acknowledged)}'"
    return [
        "npx",
        "--no-install",
        "cdk",
        "synth",
        "--quiet",
        "--app",
        command,
        "--output",
        str(Path(scratch, "C")),
    ]


def measure(label: str, context: list[str], *, samples: int, floor: bool = False) -> Measurement:
    """`cdk synth <context>` of this repository's app against the empty app (and, with
    `floor`, the template floor), through the same CLI: one warm-up each, then `samples`
    runs per side, in turns that rotate."""
    env = environment()
    cdk = ["npx", "--no-install", "cdk", "synth", "--quiet"]
    with tempfile.TemporaryDirectory(prefix="opskit-bench-synth-") as scratch:
        app = Path(scratch, "empty_app.py")
        app.write_text(EMPTY_APP)
        ours = [*cdk, *context, "--output", str(Path(scratch, "A"))]
        empty = [*cdk, "--app", f"{VENV_PYTHON} {app}", "--output", str(Path(scratch, "B"))]

        sides: list[tuple[str, list[str], list[float]]] = [
            (label, ours, []),
            ("empty", empty, []),
        ]
        warm = [f"{name} {timed(command, env):5.2f} s" for name, command, _ in sides]
        if floor:
            sides.append(("floor", floor_command(Path(scratch), Path(scratch, "A")), []))
            warm.append(f"floor {timed(sides[-1][1], env):5.2f} s")
        print("warm-up: " + "   ".join(warm))
        for i in range(samples):
            turn = sides[i % len(sides) :] + sides[: i % len(sides)]
            for _, command, bucket in turn:
                bucket.append(timed(command, env))
            print(
                f"sample {i + 1}: "
                + "   ".join(f"{name} {bucket[-1]:5.2f} s" for name, _, bucket in sides)
            )
    return Measurement(
        label=label,
        times=sides[0][2],
        empty_times=sides[1][2],
        floor_times=sides[2][2] if floor else None,
    )


def report(measurement: Measurement, *, name: str, max_ratio: float) -> int:
    """Prints the medians, the ratio and its RESULT line; 0 when within `max_ratio`."""
    ratio = measurement.ratio
    ok = ratio <= max_ratio
    verdict = "ok" if ok else "MISSED"
    rows = [
        ("samples per side:", f"{len(measurement.times)} (after one warm-up each, alternating)"),
        (f"{measurement.label} synth:", f"median {statistics.median(measurement.times):5.2f} s"),
        ("empty app synth:", f"median {statistics.median(measurement.empty_times):5.2f} s"),
        (f"ratio {measurement.label} / empty:", f"{ratio:.2f}  (target <= {max_ratio})  {verdict}"),
    ]
    if measurement.floor_times:
        rows += [
            (
                "template floor synth:",
                f"median {statistics.median(measurement.floor_times):5.2f} s",
            ),
            (
                "ratio floor / empty:",
                f"{measurement.floor_ratio:.2f}  (the template alone, built in one call; "
                "for information)",
            ),
            (
                f"ratio {measurement.label} / floor:",
                f"{measurement.over_floor:.2f}  (what the constructs add to their template; "
                "for information)",
            ),
        ]
    for label, figure in rows:
        print(f"{label:<26} {figure}")
    print(f"RESULT {name} {ratio:.2f} {max_ratio} {'ok' if ok else 'missed'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    measurement = measure(
        "prod", ["--context", "environment=prod"], samples=args.samples, floor=True
    )
    return report(measurement, name="synth_time_ratio", max_ratio=MAX_RATIO)


if __name__ == "__main__":
    sys.exit(main())
