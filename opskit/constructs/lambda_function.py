"""The one way opskit builds a Lambda function: its log group, role, code and settings.

`OpsFunction` builds every function it deploys this way, and `StackDeployments` its
post-traffic hook, so both get the same runtime, logging, packaging and scanners'
answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from opskit.bundling import asset_code, function_name, unwrapped_bundling_errors
from opskit.constructs import encrypted
from opskit.constructs.compliance import acknowledge, acknowledge_each
from opskit.constructs.paths import display_path
from opskit.constructs.per_stack import once_per_stack
from opskit.container_image import (
    PACKAGING_CONTEXT,
    LayerSource,
    Packaging,
    image_code,
    layer_source,
)
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

ARCHITECTURE = lambda_.Architecture.ARM_64

FUNCTION_METADATA = "opskit:function"
"""Resource metadata naming the handler (`notification`, `user_service.api`): what
`make invoke` finds a function of the synthesized template by."""


def lambda_log_level(level: str) -> str:
    """What Lambda's own log filter is set to: the profile's level, but never above INFO.

    Lambda gives lines without a level (metrics printed in the embedded metric format,
    Powertools' included) the level INFO, and drops them below its threshold; a WARN
    profile would silently lose every metric. The function's logger still applies the
    profile's level itself (POWERTOOLS_LOG_LEVEL)."""
    order = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    return level if order.index(level) <= order.index("INFO") else "INFO"


@functools.cache
def latest_python_runtime() -> lambda_.Runtime:
    """The newest Python runtime the installed aws-cdk-lib knows."""
    versions = {
        tuple(int(part) for part in name.split("_")[1:]): name
        for name in dir(lambda_.Runtime)
        if re.fullmatch(r"PYTHON_3_\d+", name)
    }
    return getattr(lambda_.Runtime, versions[max(versions)])  # type: ignore[no-any-return]


def configured_packaging(scope: Construct, name: str) -> Packaging:
    """How the `opskit:packaging` context of the tree packages the handler `name`: zip
    unless it says otherwise."""
    configured = scope.node.try_get_context(PACKAGING_CONTEXT) or {}
    value = configured.get(name, Packaging.ZIP.value) if isinstance(configured, dict) else None
    valid = [member.value for member in Packaging]
    if value not in valid:
        raise PropsError(
            f"{scope.node.path}: context {PACKAGING_CONTEXT!r} must map function names to"
            f" {' or '.join(valid)}; for {name!r} it has {value!r}"
        )
    return Packaging(value)


@unwrapped_bundling_errors()
def lambda_function(
    scope: Construct,
    id: str,
    *,
    profile: EnvironmentProfile,
    entry: Path,
    environment: Mapping[str, str],
    timeout: Duration,
    description: str | None,
    handler: str = "app.lambda_handler",
    memory_size: int = 256,
    layers: Sequence[lambda_.ILayerVersion] = (),
    reserved_concurrency: int | None = None,
    vpc: ec2.IVpc | None = None,
    vpc_subnets: ec2.SubnetSelection | None = None,
    security_groups: Sequence[ec2.ISecurityGroup] | None = None,
    packaging: Packaging = Packaging.ZIP,
) -> tuple[lambda_.Function, iam.Role, logs.LogGroup]:
    """A function `id` under `scope`, with its own log group (`<id>Logs`) and an inline-policy
    role (`<id>Role`): arm64, the latest Python, JSON logs at the profile's level."""
    runtime = latest_python_runtime()
    log_group = encrypted.log_group(scope, f"{id}Logs", profile=profile)
    role = iam.Role(
        scope,
        f"{id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{display_path(scope)}/{id}: inline, resource-scoped permissions only",
    )
    encrypted.allow_log_writes(log_group, role, profile=profile)
    if packaging is Packaging.ZIP:
        code: dict[str, Any] = {
            "runtime": runtime,
            "code": _zip_code(scope, entry, runtime),
            "handler": handler,
            "layers": list(layers),
        }
    else:
        code = {
            "runtime": lambda_.Runtime.FROM_IMAGE,
            "code": image_code(
                entry,
                handler=handler,
                runtime=runtime,
                architecture=ARCHITECTURE,
                layers=[_image_layer(scope, layer) for layer in layers],
            ),
            "handler": lambda_.Handler.FROM_IMAGE,
            "layers": None,
        }
    function = lambda_.Function(
        scope,
        id,
        architecture=ARCHITECTURE,
        **code,
        description=description,
        role=role,
        log_group=log_group,
        logging_format=lambda_.LoggingFormat.JSON,
        application_log_level_v2=lambda_.ApplicationLogLevel[lambda_log_level(profile.log_level)],
        system_log_level_v2=lambda_.SystemLogLevel.INFO,
        tracing=lambda_.Tracing.ACTIVE if profile.tracing else lambda_.Tracing.DISABLED,
        environment=dict(environment),
        memory_size=memory_size,
        timeout=timeout,
        reserved_concurrent_executions=reserved_concurrency,
        vpc=vpc,
        vpc_subnets=vpc_subnets if vpc else None,
        security_groups=list(security_groups) if security_groups else None,
    )
    resource = cast(lambda_.CfnFunction, function.node.default_child)
    resource.add_metadata(FUNCTION_METADATA, function_name(entry, handler))
    dead_letters = (
        "Async failures go to the SQS on-failure destination of the alias "
        "(EventInvokeConfig); synchronous callers receive their errors"
    )
    reasons = {
        "Serverless-LambdaDLQ": dead_letters,
        "CKV_AWS_116": dead_letters,
        "WS1004": "The log group, with its retention, is the function's LoggingConfig.LogGroup",
        "CKV_AWS_173": "Environment variables hold names and ARNs only; secrets stay in "
        "Secrets Manager",
    }
    if vpc is None:
        reasons["CKV_AWS_117"] = (
            "Reaches only AWS APIs and public webhooks; pass `vpc` to place it in one"
        )
    if reserved_concurrency is None:
        reasons["CKV_AWS_115"] = (
            "Reserving concurrency takes it from the account's pool (new accounts may have "
            "no room); set the profile's or the function's reserved_concurrency to cap it"
        )
    acknowledge_each(resource, reasons)
    if profile.tracing:
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions",
        )
    return function, role, log_group


def _zip_code(scope: Construct, entry: Path, runtime: lambda_.Runtime) -> lambda_.Code:
    """One asset per handler folder and stack, however many functions run it: CDK binds
    a Code to each function of a stack, and staging the folder again would only find the
    same hash."""
    return once_per_stack(
        scope,
        f"code:{entry.resolve()}",
        lambda _: asset_code(entry, runtime=runtime, architecture=ARCHITECTURE),
    )


def _image_layer(scope: Construct, layer: lambda_.ILayerVersion) -> LayerSource:
    """What an image holds in place of one of its layers: only opskit's are known."""
    source = layer_source(layer)
    if source is None:
        raise PropsError(
            f"{scope.node.path}: a container image has no layers, and opskit can copy only"
            f" its own into one; put what {layer.node.path} holds in the handler folder's"
            " requirements, or package the function as a zip"
        )
    return source
