"""Packaging a function as a container image: the template, and the Dockerfile opskit writes.

One app is synthesized for the module with a `docker` that fails (CDK_DOCKER), so that
synthesis provably needs no Docker: the image is built only when its asset is published.
The image function's twin, packaged as a zip, shows that everything but the code is the same.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler

from opskit import (
    DEV,
    PACKAGING_CONTEXT,
    OpsFunction,
    Packaging,
    PropsError,
    ScheduleOptions,
    common_layer,
    latest_python_runtime,
    powertools_layer,
)
from opskit.bundling import LAYERS_DIR
from opskit.container_image import stage
from tests.synth import cfn_resource, handler_folder, make_app, only

PYTHON_VERSION = latest_python_runtime().name.removeprefix("python")
WHEEL_HASH = "sha256:1caa2fa5a6184fb233153b35f654e6687bd555476f6170f29d8ee9be1a8b0af9"
UV_LOCK = f"""\
version = 1
requires-python = ">=3.11"

[[package]]
name = "worker"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [{{ name = "markupsafe" }}]

[[package]]
name = "markupsafe"
version = "3.0.4"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files.example/m.whl", hash = "{WHEEL_HASH}" }}]
"""
PIP = (
    f"--platform manylinux2014_aarch64 --python-version {PYTHON_VERSION} --implementation cp"
    " --only-binary=:all: --no-compile --no-cache-dir --disable-pip-version-check --quiet"
)


@dataclass(frozen=True)
class Synthesized:
    image: dict[str, Any]
    zip: dict[str, Any]
    asset: dict[str, Any]
    staged: Path


def versionless(text: str) -> str:
    """Drops the code hash CDK puts in the logical id of a function's current version."""
    return re.sub(r"(CurrentVersion[0-9A-F]{8})[0-9a-f]{32}", r"\1", text)


def worker(template: dict[str, Any]) -> dict[str, Any]:
    """The properties of the function under test (not its smoke test)."""
    functions = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function" and logical_id.startswith("WorkerFunction")
    }
    return only(functions)["Properties"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("image") / "worker"
    (folder / "tests").mkdir(parents=True)
    (folder / "app.py").write_text("import markupsafe\n\ndef lambda_handler(event, context):\n")
    (folder / "uv.lock").write_text(UV_LOCK)
    (folder / "pyproject.toml").write_text('[project]\nname = "worker"\nversion = "0.1.0"\n')
    (folder / "tests" / "test_app.py").write_text("")
    return folder


@pytest.fixture(scope="module")
def synthesized(handler: Path, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    docker = tmp_path_factory.mktemp("bin") / "docker"
    docker.write_text("#!/bin/sh\necho 'docker must not be used at synth' >&2\nexit 99\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDK_DOCKER", str(docker))
        app = make_app()
        stacks = {}
        for name, packaging in (("Image", Packaging.CONTAINER_IMAGE), ("Zip", Packaging.ZIP)):
            stack = cdk.Stack(app, f"Ops{name}")
            OpsFunction(
                stack,
                "Worker",
                entry=handler,
                profile=DEV,
                layers=[common_layer(stack), powertools_layer(stack)],
                smoke_test_event={"ping": True},
                schedule=ScheduleOptions(
                    expression=scheduler.ScheduleExpression.rate(cdk.Duration.hours(1))
                ),
                packaging=packaging,
            )
            stacks[name] = stack
        assembly = app.synth()
    outdir = Path(assembly.directory)
    image = stacks["Image"]
    manifest = json.loads((outdir / f"{image.artifact_id}.assets.json").read_text())
    [asset] = manifest["dockerImages"].values()
    return Synthesized(
        image=assembly.get_stack_by_name(image.stack_name).template,
        zip=assembly.get_stack_by_name(stacks["Zip"].stack_name).template,
        asset=asset,
        staged=outdir / asset["source"]["directory"],
    )


def test_the_function_is_an_arm64_image_from_the_asset_without_runtime_handler_or_layers(
    synthesized: Synthesized,
) -> None:
    function = worker(synthesized.image)
    assert function["PackageType"] == "Image"
    assert function["Architectures"] == ["arm64"]
    [destination] = synthesized.asset["destinations"].values()
    image_uri = function["Code"]["ImageUri"]["Fn::Sub"]
    assert image_uri.endswith(f"/{destination['repositoryName']}:{destination['imageTag']}")
    for absent in ("Handler", "Runtime", "Layers"):
        assert absent not in function
    assert synthesized.asset["source"]["platform"] == "linux/arm64"


def test_everything_but_the_code_is_the_same_as_the_zip_function(synthesized: Synthesized) -> None:
    def shape(template: dict[str, Any]) -> dict[str, Any]:
        kept = {}
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] in ("AWS::Lambda::LayerVersion", "AWS::CDK::Metadata"):
                continue
            properties = dict(resource.get("Properties", {}))
            if properties == worker(template):
                for code in ("Code", "Handler", "Runtime", "Layers", "PackageType"):
                    properties.pop(code, None)
            shape = re.sub(r"Ops(Image|Zip)", "Ops", json.dumps(properties, sort_keys=True))
            kept[versionless(logical_id)] = (resource["Type"], versionless(shape))
        return kept

    image, zipped = shape(synthesized.image), shape(synthesized.zip)
    assert image.keys() == zipped.keys()
    types = sorted(kind for kind, _ in image.values())
    for expected in (
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::CodeDeploy::DeploymentGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::SQS::Queue",
        "AWS::Scheduler::Schedule",
        "AWS::Logs::LogGroup",
    ):
        assert expected in types
    assert [k for k in image if image[k] != zipped[k]] == []


def test_the_dockerfile_installs_the_same_pins_and_copies_the_layers_on_the_lambda_base_image(
    synthesized: Synthesized,
) -> None:
    base = f"public.ecr.aws/lambda/python:{PYTHON_VERSION}"
    assert (synthesized.staged / "Dockerfile").read_text() == (
        "# Written by opskit: the files and pinned requirements of this function's zip asset\n"
        "# and of its layers, on the AWS Lambda base image of its runtime. Docker (BuildKit)\n"
        "# builds it when the asset is published; nothing here runs at synth.\n"
        "\n"
        "# Requirements, fetched for the function's platform by pip on the build machine's\n"
        "# (no emulation), into a tree laid out like the image: layers under /opt, a .pth\n"
        "# putting /opt/python on sys.path, the function's own in the task root.\n"
        f"FROM --platform=$BUILDPLATFORM {base} AS requirements\n"
        "COPY requirements/layer-powertools.txt /tmp/opskit/layer-powertools.txt\n"
        "RUN python3 -m pip install --requirement /tmp/opskit/layer-powertools.txt"
        f" --target /tmp/opskit/tree/opt/python {PIP}\n"
        'RUN python3 -c \'import pathlib, site; pth = pathlib.Path("/tmp/opskit/tree" +'
        ' site.getsitepackages()[0], "opskit-layers.pth"); pth.parent.mkdir(parents=True,'
        """ exist_ok=True); pth.write_text("/opt/python\\n")'\n"""
        "COPY requirements/function.txt /tmp/opskit/function.txt\n"
        "RUN python3 -m pip install --requirement /tmp/opskit/function.txt"
        f" --target /tmp/opskit/tree${{LAMBDA_TASK_ROOT}} {PIP} --no-deps\n"
        "\n"
        f"FROM --platform=linux/arm64 {base}\n"
        "COPY --from=requirements /tmp/opskit/tree/ /\n"
        "COPY layers/common/ /opt/\n"
        "COPY function/ ${LAMBDA_TASK_ROOT}/\n"
        'CMD ["app.lambda_handler"]\n'
    )


def test_a_plain_requirements_file_lets_pip_resolve_what_it_does_not_name(tmp_path: Path) -> None:
    folder = handler_folder(tmp_path, {"requirements.txt": "requests==2.32.3\n"})
    staged = stage(
        folder,
        handler="app.lambda_handler",
        runtime=latest_python_runtime(),
        architecture=lambda_.Architecture.ARM_64,
        layers=[],
    )
    dockerfile = (staged / "Dockerfile").read_text().splitlines()
    [install] = [line for line in dockerfile if line.startswith("RUN python3 -m pip")]
    assert "--requirement /tmp/opskit/function.txt" in install
    assert "--no-deps" not in install
    assert (staged / "requirements" / "function.txt").read_text() == "requests==2.32.3\n"


def test_only_the_requirements_stage_runs_anything_so_arm64_builds_on_x86(
    synthesized: Synthesized,
) -> None:
    """A pipeline publishes image assets on x86 CodeBuild, with no arm64 emulation."""
    stages = (synthesized.staged / "Dockerfile").read_text().split("\nFROM ")[1:]
    requirements, image = stages
    assert requirements.startswith("--platform=$BUILDPLATFORM ")
    assert image.startswith("--platform=linux/arm64 ")
    assert [line for line in image.splitlines() if line.startswith("RUN")] == []


def test_the_image_context_holds_the_zip_assets_files_and_the_exported_lock(
    synthesized: Synthesized,
) -> None:
    staged = synthesized.staged
    files = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    assert files == {
        "Dockerfile",
        "function/app.py",
        "requirements/function.txt",
        "requirements/layer-powertools.txt",
        *(
            f"layers/common/{p.relative_to(LAYERS_DIR / 'common')}"
            for p in (LAYERS_DIR / "common").rglob("*.py")
        ),
    }
    assert (
        (staged / "requirements" / "function.txt")
        .read_text()
        .endswith(f"markupsafe==3.0.4 \\\n    --hash={WHEEL_HASH}\n")
    )
    assert (staged / "requirements" / "layer-powertools.txt").read_bytes() == (
        LAYERS_DIR / "powertools" / "requirements.txt"
    ).read_bytes()


def test_packaging_follows_the_context_by_function_name_and_the_smoke_test_by_its_own(
    handler: Path,
) -> None:
    app = make_app()
    stack = cdk.Stack(app, "Configured")
    stack.node.set_context(PACKAGING_CONTEXT, {"worker": "image"})
    function = OpsFunction(stack, "Worker", entry=handler, profile=DEV, smoke_test_event={})
    assert function.name == "worker"
    assert function.packaging is Packaging.CONTAINER_IMAGE
    assert function.smoke_test_function is not None
    packages = [
        cfn_resource(f, lambda_.CfnFunction).package_type
        for f in (function.function, function.smoke_test_function)
    ]
    assert packages == ["Image", None], "the smoke test follows the context's smoke_test entry"


def test_a_layer_that_is_not_opskits_cannot_go_into_an_image(handler: Path) -> None:
    stack = cdk.Stack(make_app(), "Foreign")
    layer = lambda_.LayerVersion(stack, "Theirs", code=lambda_.Code.from_asset(str(handler)))
    with pytest.raises(PropsError) as raised:
        OpsFunction(
            stack,
            "Worker",
            entry=handler,
            profile=DEV,
            layers=[layer],
            packaging=Packaging.CONTAINER_IMAGE,
        )
    assert str(raised.value) == (
        "Foreign/Worker: a container image has no layers, and opskit can copy only its own into"
        " one; put what Foreign/Theirs holds in the handler folder's requirements, or package"
        " the function as a zip"
    )


def test_a_context_value_that_is_no_packaging_is_one_line(handler: Path) -> None:
    stack = cdk.Stack(make_app(), "Wrong")
    stack.node.set_context(PACKAGING_CONTEXT, {"worker": "docker"})
    with pytest.raises(PropsError) as raised:
        OpsFunction(stack, "Worker", entry=handler, profile=DEV)
    assert str(raised.value) == (
        "Wrong/Worker: context 'opskit:packaging' must map function names to zip or image;"
        " for 'worker' it has 'docker'"
    )
