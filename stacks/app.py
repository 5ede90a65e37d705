"""Builds the stacks of one environment into a CDK app.

Kept apart from ../app.py so tests synthesize exactly what `cdk synth` does.
"""

from __future__ import annotations

import aws_cdk as cdk

from stacks.config import EnvironmentConfig, load_environment
from stacks.ops_stack import OpsKitStack


def build(app: cdk.App) -> OpsKitStack:
    """The stack of the environment named by `--context environment=<name>` (default dev)."""
    config: EnvironmentConfig = load_environment(
        app.node.try_get_context("environments"), app.node.try_get_context("environment")
    )
    return OpsKitStack(app, config)
