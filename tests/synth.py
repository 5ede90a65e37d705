"""Synthesis helpers for construct and stack tests.

The repo's cdk.json context, bundling skipped unless asked. Kept out of conftest.py so
that handler tests (tests/functions) never import aws_cdk and run on any Python.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import aws_cdk as cdk
import jsii
from aws_cdk.assertions import Template
from constructs import IConstruct

ROOT = Path(__file__).resolve().parents[1]
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
ENVIRONMENTS = sorted(CDK_CONTEXT["environments"])
R = TypeVar("R", bound=cdk.CfnResource)


GOLDEN = Path(__file__).parent / "golden"
"""Each environment's template as committed (`make golden` refreshes them)."""
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")
_VERSION_ID = re.compile(r"CurrentVersion[0-9A-F]{8}[0-9a-f]{32}|CurrentVersion[0-9a-f]{32}")


def golden_text(template_text: str) -> str:
    """The template as the golden copies hold it: asset hashes (which follow handler code)
    masked, keys sorted."""
    text = _ASSET_HASH.sub("<asset-hash>", template_text)
    text = _VERSION_ID.sub("CurrentVersion<code-hash>", text)
    return json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"


def make_app(*, bundle: bool = False, validate: bool = False, **context: Any) -> cdk.App:
    """An app with cdk.json's context; bundling is skipped unless `bundle`, and CDK's
    built-in template validation (seconds per large template) unless `validate`: the
    environments' and the pipeline's own tests validate, as `cdk synth` does."""
    settings = {**CDK_CONTEXT, **context}
    if not bundle:
        settings["aws:cdk:bundling-stacks"] = []
    return cdk.App(
        context=settings,
        outdir=tempfile.mkdtemp(prefix="opskit-cdk-out-"),
        builtin_cloud_formation_validation=validate,
    )


def handler_folder(parent: Path, files: Mapping[str, str] | None = None) -> Path:
    """`parent/handler`: an app.py with a `lambda_handler`, and `files` (name: text) beside it."""
    folder = parent / "handler"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


def with_change(*names: str, **values: object) -> dict[str, Any]:
    """cdk.json's environments, a copy, with `values` set in each of `names`."""
    environments: dict[str, Any] = copy.deepcopy(CDK_CONTEXT["environments"])
    for name in names:
        environments[name].update(values)
    return environments


def resources_of_type(template: Template, type_: str) -> Mapping[str, Any]:
    return template.find_resources(type_)


def cfn_resource(construct: Any, type_: type[R]) -> R:
    """The CloudFormation resource behind an L2 construct, as the type a test expects."""
    resource = construct.node.default_child
    assert isinstance(resource, type_), f"{construct.node.path}: {type(resource).__name__}"
    return resource


def only(mapping: Mapping[str, Any]) -> Any:
    """The single value of a one-item mapping; fails loudly otherwise."""
    assert len(mapping) == 1, f"expected exactly one, found {sorted(mapping)}"
    return next(iter(mapping.values()))


def as_list(value: Any) -> list[Any]:
    """A policy field that CloudFormation takes as one value or a list (`Action`,
    `Principal.Service`), as a list."""
    return value if isinstance(value, list) else [value]


def listed_names(output: Mapping[str, Any]) -> list[Any]:
    """The names an output lists: joined, or one name alone (CDK drops a join of one)."""
    value = output["Value"]
    return list(value["Fn::Join"][1]) if "Fn::Join" in value else [value]


def dashboard_text(template: Template) -> str:
    """The stack's one dashboard body, its literal parts joined (tokens left out)."""
    body = only(template.find_resources("AWS::CloudWatch::Dashboard"))["Properties"][
        "DashboardBody"
    ]
    return "".join(part for part in body["Fn::Join"][1] if isinstance(part, str))


def full_width_row(title: str) -> re.Pattern[str]:
    """A time-series widget titled `title` across the dashboard's 24 units, 6 high."""
    return re.compile(
        r'"width":24,"height":6,"x":0,"y":\d+,"properties":\{"view":"timeSeries",'
        rf'"title":{re.escape(json.dumps(title))}'
    )


def bare_app() -> cdk.App:
    """An app as a consumer may have it: none of cdk.json's feature flags (apps made years
    ago have few), bundling and CDK's built-in validation skipped."""
    return cdk.App(
        context={"aws:cdk:bundling-stacks": []},
        outdir=tempfile.mkdtemp(prefix="opskit-cdk-out-"),
        builtin_cloud_formation_validation=False,
    )


@jsii.implements(cdk.IAspect)
class RetainEverything:
    """What some organisations apply to every app: nothing is ever deleted."""

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, cdk.CfnResource):
            node.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
