"""Builds into a CDK app what cdk.json and the command line ask for.

`--context environment=<name>` (dev when omitted): that environment's stack.
`--context pipeline=true`: the delivery pipeline's stack, whose stages hold the same
environment stacks. Kept apart from ../app.py so tests synthesize exactly what
`cdk synth` does.

The pipeline's configuration is the top-level `pipeline` entry of cdk.json, beside
`context` rather than in it: the CLI's `--context pipeline=true` would replace a
context entry of the same name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from stacks.config import ConfigError, load_environment
from stacks.ops_stack import compose_environment
from stacks.pipeline import DeliveryPipelineStack
from stacks.pipeline_config import PipelineConfig, load_pipeline, with_pipeline

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


def project_settings() -> dict[str, Any]:
    """cdk.json as a whole: `context` reaches the app through the CLI, `pipeline` from here."""
    return json.loads(CDK_JSON.read_text())  # type: ignore[no-any-return]


def pipeline_requested(value: Any) -> bool:
    """`--context pipeline=true` (the CLI passes a string); absent or false: no pipeline."""
    if value is None or value is False or str(value).lower() == "false":
        return False
    if value is True or str(value).lower() == "true":
        return True
    raise ConfigError(f"--context pipeline must be true or false, got {value!r}")


def build(app: cdk.App, *, settings: Mapping[str, Any] | None = None) -> cdk.Stack:
    """The delivery pipeline's stack under `--context pipeline=true`, else the stack of the
    environment named by `--context environment=<name>` (default dev).

    :param settings: cdk.json's top level. Default: the repository's cdk.json.
    """
    settings = project_settings() if settings is None else settings
    environments = app.node.try_get_context("environments")
    pipeline: PipelineConfig | None = None
    if "pipeline" in settings:
        pipeline = load_pipeline(settings["pipeline"], environments)
    if pipeline_requested(app.node.try_get_context("pipeline")):
        if pipeline is None:
            raise ConfigError('--context pipeline=true needs a "pipeline" entry in cdk.json')
        return DeliveryPipelineStack(app, pipeline)
    config = load_environment(environments, app.node.try_get_context("environment"))
    return compose_environment(app, with_pipeline(config, pipeline))
