"""Bundling without Docker: assets are built on the host, with Lambda-platform wheels,
and contain only what the function needs. (The one module that bundles for real.)"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from opskit import DEV, OpsFunction, latest_python_runtime, powertools_layer
from opskit.bundling import FORCE_DOCKER_ENV, LAYERS_DIR, LocalBundler, bundling_steps
from tests.synth import make_app, only


@pytest.fixture(scope="module")
def handler(tmp_path_factory) -> Path:
    """A handler folder with a compiled dependency and the clutter an asset must leave out."""
    folder = tmp_path_factory.mktemp("handler")
    (folder / "app.py").write_text(
        "import markupsafe\n\ndef lambda_handler(event, context):\n    return {}\n"
    )
    (folder / "requirements.txt").write_text("markupsafe==3.0.4\n")
    (folder / "tests").mkdir()
    (folder / "tests" / "test_app.py").write_text("def test_nothing():\n    pass\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (folder / "helpers.pyc").write_bytes(b"\0")
    return folder


@pytest.fixture(scope="module")
def assets(handler, tmp_path_factory) -> dict[str, Path]:
    """Synthesizes with bundling on and a `docker` that fails, so only host bundling can succeed."""
    fake_docker = tmp_path_factory.mktemp("bin") / "docker"
    fake_docker.write_text("#!/bin/sh\necho 'docker must not be used' >&2\nexit 99\n")
    fake_docker.chmod(fake_docker.stat().st_mode | stat.S_IEXEC)
    previous = os.environ.get("CDK_DOCKER")
    os.environ["CDK_DOCKER"] = str(fake_docker)
    try:
        app = make_app(bundle=True)
        stack = cdk.Stack(app, "Bundled")
        function = OpsFunction(
            stack, "Worker", entry=handler, profile=DEV, layers=[powertools_layer(stack)]
        )
        template = Template.from_stack(stack)
    finally:
        if previous is None:
            del os.environ["CDK_DOCKER"]
        else:
            os.environ["CDK_DOCKER"] = previous
    outdir = Path(app.outdir)

    manifest = json.loads((outdir / stack.artifact_id).with_suffix(".assets.json").read_text())

    def asset_of(logical_id: str) -> Path:
        properties = template.to_json()["Resources"][logical_id]["Properties"]
        key = (properties.get("Code") or properties["Content"])["S3Key"]
        return outdir / manifest["files"][key.removesuffix(".zip")]["source"]["path"]

    layer_id = next(iter(template.find_resources("AWS::Lambda::LayerVersion")))
    return {
        "function": asset_of(stack.get_logical_id(function.function.node.default_child)),
        "layer": asset_of(layer_id),
    }


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_handler_is_copied_with_wheels_for_the_lambda_platform(assets):
    files = files_in(assets["function"])
    assert "app.py" in files
    speedups = [f for f in files if f.startswith("markupsafe/_speedups") and f.endswith(".so")]
    python = latest_python_runtime().name.removeprefix("python").replace(".", "")
    assert speedups == [f"markupsafe/_speedups.cpython-{python}-aarch64-linux-gnu.so"]


def test_the_asset_leaves_out_tests_caches_bytecode_and_the_requirements_file(assets):
    for name in files_in(assets["function"]) | files_in(assets["layer"]):
        assert "__pycache__" not in name and not name.endswith((".pyc", ".pyo")), name
        assert not name.startswith("tests/"), name
        assert name != "requirements.txt"


def test_the_powertools_layer_holds_the_pinned_release_under_python(assets):
    pinned = (LAYERS_DIR / "powertools" / "requirements.txt").read_text().split("==")[1].strip()
    files = files_in(assets["layer"])
    assert "python/aws_lambda_powertools/logging/logger.py" in files
    assert any(f.startswith(f"python/aws_lambda_powertools-{pinned}.dist-info/") for f in files)
    assert all(f.startswith("python/") for f in files)


def test_docker_bundling_runs_the_same_steps_as_the_host():
    runtime, architecture = latest_python_runtime(), lambda_.Architecture.ARM_64
    host = bundling_steps(
        "/src",
        "/out",
        python="/venv/python",
        runtime=runtime,
        architecture=architecture,
        has_requirements=True,
    )
    docker = bundling_steps(
        "/asset-input",
        "/asset-output",
        python="python",
        runtime=runtime,
        architecture=architecture,
        has_requirements=True,
    )
    assert [step[1:] for step in host] == [
        [arg.replace("/asset-input", "/src").replace("/asset-output", "/out") for arg in step[1:]]
        for step in docker
    ]
    pip = host[1]
    version = runtime.name.removeprefix("python")
    for flag, value in (
        ("--platform", "manylinux2014_aarch64"),
        ("--python-version", version),
        ("--implementation", "cp"),
    ):
        assert pip[pip.index(flag) + 1] == value
    assert "--only-binary=:all:" in pip


def test_a_folder_without_requirements_is_only_copied():
    steps = bundling_steps(
        "/src",
        "/out",
        python="python",
        runtime=latest_python_runtime(),
        architecture=lambda_.Architecture.ARM_64,
        has_requirements=False,
    )
    assert len(steps) == 1


def test_forcing_docker_makes_the_host_bundler_decline(handler, monkeypatch):
    bundler = LocalBundler(handler, latest_python_runtime(), lambda_.Architecture.ARM_64)
    assert bundler.can_bundle()
    monkeypatch.setenv(FORCE_DOCKER_ENV, "1")
    assert not bundler.can_bundle()
    assert bundler.try_bundle("/nonexistent") is False


def test_skipped_bundling_still_gives_each_function_its_own_asset(handler):
    app = make_app()
    stack = cdk.Stack(app, "Skipped")
    OpsFunction(stack, "Worker", entry=handler, profile=DEV)
    code = only(
        Template.from_stack(stack).find_resources(
            "AWS::Lambda::Function", {"Properties": {"MemorySize": 256}}
        )
    )
    assert code["Properties"]["Code"]["S3Key"].endswith(".zip")
