"""Rewrites a cloud assembly's CloudFormation templates without whitespace: part of
`make synth PIPELINE=1`, whose `cdk.out` the delivery pipeline deploys from.

The pipeline's Prepare actions (CodePipeline's CloudFormation action) refuse a template
over 512 KB, half of what CloudFormation itself takes from S3, and the CDK writes its
templates indented: an environment's template is ~550 KB that way and ~400 KB without the
whitespace. Only whitespace goes; the document is the same. Only the stacks' templates
are touched (the assembly's and its stages'), never a file inside an asset, whose hash is
already its name. A template still over the limit stops the synth with one line naming it.

    python scripts/compact_templates.py [cdk.out]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

PREPARE_LIMIT_BYTES = 512_000
"""What CodePipeline's CloudFormation action accepts, "512 KB" read the stricter way
(reported by AWS, not in CodePipeline's quotas)."""


def compacted(text: bytes) -> bytes:
    """The same JSON document without whitespace, non-ASCII characters escaped: the Prepare
    action has refused templates with raw UTF-8 that CloudFormation takes from S3."""
    return json.dumps(json.loads(text), separators=(",", ":")).encode()


def compact(template: Path) -> int:
    """Rewrites `template` compactly (when that changes it); returns its size in bytes."""
    text = template.read_bytes()
    smaller = compacted(text)
    if smaller != text:
        template.write_bytes(smaller)
    return len(smaller)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    assembly = Path(args[0] if args else "cdk.out")
    templates = sorted(
        [*assembly.glob("*.template.json"), *assembly.glob("assembly-*/*.template.json")]
    )
    if not templates:
        print(f"compact-templates: no templates under {assembly}/", file=sys.stderr)
        return 1
    sizes = {template: compact(template) for template in templates}
    largest = max(sizes, key=sizes.__getitem__)
    if sizes[largest] > PREPARE_LIMIT_BYTES:
        print(
            f"compact-templates: {largest} is {sizes[largest] // 1000} KB without whitespace, "
            f"over the {PREPARE_LIMIT_BYTES // 1000} KB the pipeline's CloudFormation action "
            "accepts: move resources to another stack",
            file=sys.stderr,
        )
        return 1
    print(
        f"compact-templates: {len(templates)} templates, the largest {largest.name} at "
        f"{sizes[largest] // 1000} KB (limit {PREPARE_LIMIT_BYTES // 1000} KB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
