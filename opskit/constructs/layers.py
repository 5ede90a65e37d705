"""The shared Lambda layers, created once per stack however many functions use them."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from opskit.bundling import asset_code, unwrapped_bundling_errors
from opskit.constructs.ops_function import ARCHITECTURE, latest_python_runtime
from opskit.constructs.per_stack import once_per_stack
from opskit.container_image import OPSKIT_LAYERS


def common_layer(scope: Construct) -> lambda_.ILayerVersion:
    """`opskit_common`: runtime helpers every handler shares (events, clients, secrets, HTTP)."""
    return _layer(scope, "OpsKitCommonLayer", "Runtime helpers shared by opskit functions")


def powertools_layer(scope: Construct) -> lambda_.ILayerVersion:
    """Powertools for AWS Lambda (Python), at the version pinned in its requirements.txt."""
    return _layer(scope, "OpsKitPowertoolsLayer", "Powertools for AWS Lambda (Python)")


def _layer(scope: Construct, id: str, description: str) -> lambda_.ILayerVersion:
    """One per stack; a container image copies its source (`OPSKIT_LAYERS`) instead."""
    return once_per_stack(scope, id, lambda stack: _new_layer(stack, id, description))


@unwrapped_bundling_errors()
def _new_layer(stack: Stack, id: str, description: str) -> lambda_.ILayerVersion:
    source = OPSKIT_LAYERS[id]
    runtime = latest_python_runtime()
    return lambda_.LayerVersion(
        stack,
        id,
        code=asset_code(
            source.folder,
            runtime=runtime,
            architecture=ARCHITECTURE,
            output_subdirectory=source.subdirectory,
        ),
        compatible_runtimes=[runtime],
        compatible_architectures=[ARCHITECTURE],
        description=description,
    )
