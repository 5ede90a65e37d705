"""Synthesis helpers for construct and stack tests.

The repo's cdk.json context, bundling skipped unless asked. Kept out of conftest.py so
that handler tests (tests/functions) never import aws_cdk and run on any Python.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template

ROOT = Path(__file__).resolve().parents[1]
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
ENVIRONMENTS = sorted(CDK_CONTEXT["environments"])


def make_app(*, bundle: bool = False, **context: Any) -> cdk.App:
    """An app with cdk.json's context; bundling is skipped unless `bundle`."""
    settings = {**CDK_CONTEXT, **context}
    if not bundle:
        settings["aws:cdk:bundling-stacks"] = []
    return cdk.App(context=settings, outdir=tempfile.mkdtemp(prefix="opskit-cdk-out-"))


def resources_of_type(template: Template, type_: str) -> dict[str, Any]:
    return template.find_resources(type_)


def only(mapping: dict[str, Any]) -> Any:
    """The single value of a one-item mapping; fails loudly otherwise."""
    assert len(mapping) == 1, f"expected exactly one, found {sorted(mapping)}"
    return next(iter(mapping.values()))


def smoke_tests(template: Template) -> dict[str, dict[str, Any]]:
    """What the stack's post-traffic hooks test, by the logical id of the tested function:
    {"group": deployment group's logical id, "qualifier": alias, "event": test event}."""
    found: dict[str, dict[str, Any]] = {}
    for hook in template.find_resources("AWS::Lambda::Function").values():
        value = (
            (hook["Properties"].get("Environment") or {}).get("Variables", {}).get("SMOKE_TESTS")
        )
        if value is None:
            continue
        parts = value["Fn::Join"][1] if isinstance(value, dict) else [value]
        text = "".join(part if isinstance(part, str) else part["Ref"] for part in parts)
        for group, target in json.loads(text).items():
            found[target["function"]] = {
                "group": group,
                "qualifier": target["qualifier"],
                "event": target["event"],
            }
    return found
