"""The shared Lambda layers, created once per stack however many functions use them."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from opskit.bundling import LAYERS_DIR, asset_code, unwrapped_bundling_errors
from opskit.constructs.ops_function import ARCHITECTURE, latest_python_runtime


def common_layer(scope: Construct) -> lambda_.ILayerVersion:
    """`opskit_common`: runtime helpers every handler shares (events, clients, secrets, HTTP)."""
    return _layer(scope, "common", "Runtime helpers shared by opskit functions", subdirectory="")


def powertools_layer(scope: Construct) -> lambda_.ILayerVersion:
    """Powertools for AWS Lambda (Python), at the version pinned in its requirements.txt."""
    return _layer(scope, "powertools", "Powertools for AWS Lambda (Python)", subdirectory="python")


@unwrapped_bundling_errors()
def _layer(
    scope: Construct, name: str, description: str, *, subdirectory: str
) -> lambda_.ILayerVersion:
    stack = Stack.of(scope)
    id = f"OpsKit{name.title()}Layer"
    existing = stack.node.try_find_child(id)
    if existing is not None:
        return existing  # type: ignore[return-value]
    runtime = latest_python_runtime()
    return lambda_.LayerVersion(
        stack,
        id,
        code=asset_code(
            LAYERS_DIR / name,
            runtime=runtime,
            architecture=ARCHITECTURE,
            output_subdirectory=subdirectory,
        ),
        compatible_runtimes=[runtime],
        compatible_architectures=[ARCHITECTURE],
        description=description,
    )
