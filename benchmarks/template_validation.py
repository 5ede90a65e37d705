"""Where CDK's built-in template validation spends its time, for information (no target).

`cdk synth` validates every template with the `@aws/cloudformation-validate` engine that
aws-cdk-lib bundles (WebAssembly) and the Rego rules it ships, as
`CloudFormationValidatePlugin` (aws-cdk-lib 2.275) configures them, with its excluded
rules. This runs that engine directly on Node
22, a fresh process per sample, and prints the medians of its construction (which the
empty app pays too), its first validation of a template and a second one of the same
template (once warm), for: a one-queue template (the empty app's side), the committed
prod template, the prod template with one resource of each type, and its alarms alone.
It is what the template floor in synth_time.py pays beyond the empty app.

    .venv/bin/python benchmarks/template_validation.py [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / "tools" / "node22" / "node_modules" / ".bin" / "node"
PROD = REPO / "tests" / "golden" / "prod.template.json"

MEASURE = """\
const [lib, templatePath] = process.argv.slice(2);
const fs = require("fs"), path = require("path");
const engineModule = require(path.join(lib, "node_modules/@aws/cloudformation-validate"));
const rules = path.join(lib, "core/lib/validation/rules");
const regoRules = fs.readdirSync(rules).filter(f => f.endsWith(".rego")).sort()
  .map(name => ({name, content: fs.readFileSync(path.join(rules, name), "utf-8")}));
const elapsed = (work) => { const start = process.hrtime.bigint(); work();
  return Number(process.hrtime.bigint() - start) / 1e6; };
let engine;
const construction = elapsed(() => { engine = new engineModule.CompositeEngine({regoRules}); });
const text = fs.readFileSync(templatePath, "utf-8");
const validate = () => engine.validateTemplate(new engineModule.TemplateContent(text, "t"),
  {detailLevel: "STANDARD", severityLevel: "WARN",
   pseudoParameterOverrides: {accountId: "111111111111", region: "eu-west-1"},
   exclude: {ids: ["W3005", "W1020", "E1018", "W9002", "W9013", "W1103"],
             services: [{ruleId: "W3697", service: "AWS::AutoScaling"}]}});
console.log(JSON.stringify({construction, first: elapsed(validate), second: elapsed(validate)}));
"""


def aws_cdk_lib() -> Path:
    """The aws-cdk-lib package the jsii runtime unpacked for this venv's aws-cdk-lib."""
    cache = Path.home() / ".cache" / "aws" / "jsii" / "package-cache" / "aws-cdk-lib"
    found = sorted(cache.glob(f"{version('aws-cdk-lib')}/*/node_modules/@aws"))
    if not found:
        sys.exit(
            f"template-validation: no unpacked aws-cdk-lib under {cache}; run `make synth` once"
        )
    return found[-1].parents[1]


def variants(workdir: Path) -> dict[str, Path]:
    prod = json.loads(PROD.read_text())
    resources = prod["Resources"]
    first_of_type: dict[str, str] = {}
    for logical_id, resource in resources.items():
        first_of_type.setdefault(resource["Type"], logical_id)
    shapes = {
        "one queue": {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}},
        f"prod ({len(resources)} resources)": prod,
        f"prod, one per type ({len(first_of_type)})": {
            **prod,
            "Resources": {k: resources[k] for k in first_of_type.values()},
        },
        "prod's alarms alone": {
            **prod,
            "Resources": {
                k: r for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
            },
        },
    }
    paths = {}
    for index, (name, template) in enumerate(shapes.items()):
        paths[name] = workdir / f"{index}.json"
        paths[name].write_text(json.dumps(template))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    samples = parser.parse_args().samples
    lib = aws_cdk_lib()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = workdir / "measure.js"
        script.write_text(MEASURE)
        print(f"{'template':32} {'engine ms':>10} {'first ms':>10} {'second ms':>10}")
        for name, path in variants(workdir).items():
            runs = [
                json.loads(
                    subprocess.run(
                        [str(NODE), str(script), str(lib), str(path)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                for _ in range(samples)
            ]
            medians = [
                statistics.median(run[key] for run in runs)
                for key in ("construction", "first", "second")
            ]
            print(f"{name:32} " + " ".join(f"{value:10.0f}" for value in medians))


if __name__ == "__main__":
    main()
