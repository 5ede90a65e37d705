"""Bundling without Docker: assets are built on the host, with Lambda-platform wheels,
and contain only what the function needs. (The one module that bundles for real.)

Every test keeps its wheels in a wheelhouse of its own (OPSKIT_WHEELHOUSE), never in the
user's cache. "Offline" is PIP_NO_INDEX=1: pip may then use the wheelhouse and nothing else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from opskit import DEV, BundlingError, OpsFunction, latest_python_runtime, powertools_layer
from opskit.bundling import (
    CONTAINER_WHEELHOUSE,
    FORCE_DOCKER_ENV,
    LAYERS_DIR,
    WHEELHOUSE_ENV,
    LocalBundler,
    bundling_steps,
    wheelhouse_key,
)
from tests.synth import CDK_CONTEXT, ROOT, cfn_resource, handler_folder, make_app, only

RUNTIME = latest_python_runtime()
PYTHON_VERSION = RUNTIME.name.removeprefix("python")
PLATFORM = "manylinux2014_aarch64"
OFFLINE = {"PIP_NO_INDEX": "1"}


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
def fake_docker(tmp_path_factory) -> Path:
    """A `docker` that fails, so only host bundling can succeed."""
    docker = tmp_path_factory.mktemp("bin") / "docker"
    docker.write_text("#!/bin/sh\necho 'docker must not be used' >&2\nexit 99\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return docker


def synthesize(
    handler: Path, fake_docker: Path, env: Mapping[str, str], *, with_layer: bool = True
) -> dict[str, Path]:
    """Synthesizes a function (and the Powertools layer) with bundling on; their asset folders."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDK_DOCKER", str(fake_docker))
        for name, value in env.items():
            patch.setenv(name, value)
        app = make_app(bundle=True)
        stack = cdk.Stack(app, "Bundled")
        layers = [powertools_layer(stack)] if with_layer else []
        function = OpsFunction(stack, "Worker", entry=handler, profile=DEV, layers=layers)
        template = Template.from_stack(stack)
    outdir = Path(app.outdir)
    manifest = json.loads((outdir / stack.artifact_id).with_suffix(".assets.json").read_text())

    def asset_of(logical_id: str) -> Path:
        properties = template.to_json()["Resources"][logical_id]["Properties"]
        key = (properties.get("Code") or properties["Content"])["S3Key"]
        return outdir / manifest["files"][key.removesuffix(".zip")]["source"]["path"]

    resource = cfn_resource(function.function, lambda_.CfnFunction)
    assets = {"function": asset_of(stack.get_logical_id(resource))}
    if with_layer:
        assets["layer"] = asset_of(next(iter(template.find_resources("AWS::Lambda::LayerVersion"))))
    return assets


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The wheelhouse the first synth of this module fills."""
    return tmp_path_factory.mktemp("wheelhouse")


@pytest.fixture(scope="module")
def assets(handler, fake_docker, wheelhouse) -> dict[str, Path]:
    return synthesize(handler, fake_docker, {WHEELHOUSE_ENV: str(wheelhouse)})


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def contents(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files_in(folder)}


def test_the_handler_is_copied_with_wheels_for_the_lambda_platform(assets):
    files = files_in(assets["function"])
    assert "app.py" in files
    speedups = [f for f in files if f.startswith("markupsafe/_speedups") and f.endswith(".so")]
    python = PYTHON_VERSION.replace(".", "")
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


def test_the_wheelhouse_keeps_one_entry_per_requirements_file_named_by_its_key(
    assets, handler, wheelhouse
):
    expected = {
        wheelhouse_key(
            (folder / "requirements.txt").read_bytes(),
            platform=PLATFORM,
            python_version=PYTHON_VERSION,
        )
        for folder in (handler, LAYERS_DIR / "powertools")
    }
    assert {entry.name for entry in wheelhouse.iterdir()} == expected
    handler_entry = wheelhouse / wheelhouse_key(
        b"markupsafe==3.0.4\n", platform=PLATFORM, python_version=PYTHON_VERSION
    )
    [wheel] = [entry.name for entry in handler_entry.iterdir()]
    assert wheel.startswith("markupsafe-3.0.4-") and "aarch64" in wheel


def test_a_second_synth_bundles_offline_from_the_wheelhouse_into_the_same_assets(
    assets, handler, fake_docker, wheelhouse
):
    # GIVEN the wheelhouse that the first synth (fixture `assets`) filled
    # WHEN synthesizing again into a clean output folder, with no package index
    again = synthesize(handler, fake_docker, {WHEELHOUSE_ENV: str(wheelhouse), **OFFLINE})
    # THEN every asset comes out the same, byte for byte
    for kind, folder in assets.items():
        assert again[kind] != folder
        assert again[kind].name == folder.name
        assert contents(again[kind]) == contents(folder)


def test_the_wheelhouse_key_changes_with_requirements_platform_and_python():
    key = wheelhouse_key(b"markupsafe==3.0.4\n", platform=PLATFORM, python_version="3.14")
    assert key == wheelhouse_key(b"markupsafe==3.0.4\n", platform=PLATFORM, python_version="3.14")
    others = {
        wheelhouse_key(b"markupsafe==3.0.3\n", platform=PLATFORM, python_version="3.14"),
        wheelhouse_key(
            b"markupsafe==3.0.4\n", platform="manylinux2014_x86_64", python_version="3.14"
        ),
        wheelhouse_key(b"markupsafe==3.0.4\n", platform=PLATFORM, python_version="3.13"),
    }
    assert len(others) == 3 and key not in others


FAKE_PIP_THAT_DIES = """\
import os, signal, sys
dest = sys.argv[sys.argv.index("-d") + 1]
with open(os.path.join(dest, "markupsafe-3.0.4-half-downloaded.whl"), "wb") as wheel:
    wheel.write(b"PK")
os.kill(os.getppid(), signal.SIGKILL)
"""


def test_a_download_killed_midway_leaves_no_entry_and_the_next_bundling_downloads_again(
    handler, tmp_path, monkeypatch
):
    # GIVEN a pip that writes half a wheel, then kills the bundling step that runs it
    fake = tmp_path / "fake" / "pip"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(FAKE_PIP_THAT_DIES)
    wheelhouse = tmp_path / "wheelhouse"
    entry = wheelhouse / wheelhouse_key(
        b"markupsafe==3.0.4\n", platform=PLATFORM, python_version=PYTHON_VERSION
    )
    fill = bundling_steps(
        str(handler),
        str(tmp_path / "out"),
        python=sys.executable,
        runtime=RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        wheels=str(entry),
    )[1]
    # WHEN the step runs
    killed = subprocess.run(
        fill, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(fake.parent)}, check=False
    )
    # THEN it died, and the half download is nowhere an entry would be looked for
    assert killed.returncode == -signal.SIGKILL
    assert not entry.exists()
    # AND the next bundling downloads the requirements afresh
    monkeypatch.setenv(WHEELHOUSE_ENV, str(wheelhouse))
    bundler = LocalBundler(handler, RUNTIME, lambda_.Architecture.ARM_64)
    assert bundler.try_bundle(str(tmp_path / "asset"))
    [wheel] = [path.name for path in entry.iterdir()]
    assert wheel.startswith("markupsafe-3.0.4-") and wheel.endswith("aarch64.whl")
    assert (tmp_path / "asset" / "markupsafe" / "__init__.py").is_file()


def test_with_hashes_in_the_requirements_a_tampered_wheelhouse_entry_is_refused(
    tmp_path, monkeypatch
):
    # GIVEN requirements pinned by hash, and an entry holding a wheel of other content
    source = tmp_path / "handler"
    source.mkdir()
    expected = hashlib.sha256(b"the real wheel").hexdigest()
    requirements = f"markupsafe==3.0.4 --hash=sha256:{expected}\n".encode()
    (source / "requirements.txt").write_bytes(requirements)
    wheelhouse = tmp_path / "wheelhouse"
    entry = wheelhouse / wheelhouse_key(
        requirements, platform=PLATFORM, python_version=PYTHON_VERSION
    )
    entry.mkdir(parents=True)
    tag = f"cp{PYTHON_VERSION.replace('.', '')}"
    (entry / f"markupsafe-3.0.4-{tag}-{tag}-{PLATFORM}.whl").write_bytes(b"a tampered wheel")
    monkeypatch.setenv(WHEELHOUSE_ENV, str(wheelhouse))
    # WHEN bundling, offline
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(BundlingError) as raised:
        LocalBundler(source, RUNTIME, lambda_.Architecture.ARM_64).try_bundle(str(tmp_path / "out"))
    # THEN pip's hash check refuses it, in one line that says what to do
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"bundling handler: installing its requirements for {PLATFORM}, CPython {PYTHON_VERSION}"
        f" from the wheelhouse entry {entry} failed: ERROR: THESE PACKAGES DO NOT MATCH THE HASHES"
    )
    assert message.endswith("; delete that folder to download them again")
    assert not (tmp_path / "out" / "markupsafe").exists()


def test_a_folder_that_cannot_be_copied_is_one_line_naming_it(tmp_path):
    source = handler_folder(tmp_path)
    (source / "settings.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(BundlingError) as raised:
        LocalBundler(source, RUNTIME, lambda_.Architecture.ARM_64).try_bundle(str(tmp_path / "out"))
    message = str(raised.value)
    assert message.startswith(f"bundling handler: copying {source} failed: ")
    assert "settings.json" in message and "\n" not in message


def test_offline_with_an_empty_wheelhouse_bundling_stops_with_one_line_saying_what_to_do(
    handler, fake_docker, tmp_path
):
    wheelhouse = tmp_path / "wheelhouse"
    with pytest.raises(BundlingError) as raised:
        synthesize(
            handler, fake_docker, {WHEELHOUSE_ENV: str(wheelhouse), **OFFLINE}, with_layer=False
        )
    assert str(raised.value) == (
        f"bundling {handler.name}: no wheel of markupsafe==3.0.4 for {PLATFORM}, CPython"
        f" {PYTHON_VERSION} in the wheelhouse or on the package index; synth once with the"
        f" index reachable to keep it in {wheelhouse}, or set OPSKIT_WHEELHOUSE to a"
        " wheelhouse that has it"
    )
    assert list(wheelhouse.iterdir()) == [], "a failed download leaves nothing behind"


def test_synth_offline_with_an_empty_wheelhouse_exits_with_one_line_and_no_traceback(
    fake_docker, tmp_path
):
    context = {**CDK_CONTEXT, "environment": "prod"}
    env = {
        **os.environ,
        **OFFLINE,
        "CDK_CONTEXT_JSON": json.dumps(context),
        "CDK_OUTDIR": str(tmp_path / "cdk.out"),
        "CDK_DOCKER": str(fake_docker),
        WHEELHOUSE_ENV: str(tmp_path / "wheelhouse"),
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    *progress, error = result.stderr.strip().splitlines()
    assert all(line.startswith("Bundling asset ") for line in progress), progress
    pinned = (LAYERS_DIR / "powertools" / "requirements.txt").read_text().strip()
    target = f"{PLATFORM}, CPython {PYTHON_VERSION}"
    assert error.startswith(f"opskit: bundling powertools: no wheel of {pinned} for {target} ")
    assert error.endswith("or set OPSKIT_WHEELHOUSE to a wheelhouse that has it")


def test_docker_bundling_runs_the_same_steps_as_the_host():
    architecture = lambda_.Architecture.ARM_64
    key = wheelhouse_key(b"markupsafe==3.0.4\n", platform=PLATFORM, python_version=PYTHON_VERSION)
    host = bundling_steps(
        "/src",
        "/out",
        python="/venv/python",
        runtime=RUNTIME,
        architecture=architecture,
        wheels=f"/home/me/.cache/opskit/wheelhouse/{key}",
    )
    docker = bundling_steps(
        "/asset-input",
        "/asset-output",
        python="python",
        runtime=RUNTIME,
        architecture=architecture,
        wheels=str(CONTAINER_WHEELHOUSE / key),
    )

    def on_host(arg: str) -> str:
        for container, host_path in (
            ("/asset-input", "/src"),
            ("/asset-output", "/out"),
            (str(CONTAINER_WHEELHOUSE), "/home/me/.cache/opskit/wheelhouse"),
        ):
            arg = arg.replace(container, host_path)
        return arg

    assert [step[1:] for step in host] == [[on_host(arg) for arg in step[1:]] for step in docker]
    _, download, install = host
    for pip in (download, install):
        for flag, value in (
            ("--platform", PLATFORM),
            ("--python-version", PYTHON_VERSION),
            ("--implementation", "cp"),
        ):
            assert pip[pip.index(flag) + 1] == value
        assert "--only-binary=:all:" in pip
    assert install[install.index("--find-links") + 1] == download[3]
    assert "--no-index" in install
    assert "--no-deps" not in download + install, "a requirements.txt need not name every package"


def test_a_folder_without_requirements_is_only_copied():
    steps = bundling_steps(
        "/src",
        "/out",
        python="python",
        runtime=RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        wheels=None,
    )
    assert len(steps) == 1


def test_forcing_docker_makes_the_host_bundler_decline(handler, monkeypatch):
    bundler = LocalBundler(handler, RUNTIME, lambda_.Architecture.ARM_64)
    assert bundler.can_bundle()
    monkeypatch.setenv(FORCE_DOCKER_ENV, "1")
    assert not bundler.can_bundle()
    assert bundler.try_bundle("/nonexistent") is False


def test_a_host_without_pip_declines_requirements_but_still_copies_a_plain_folder(
    handler, tmp_path, monkeypatch
):
    plain = handler_folder(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pip" else find_spec(name, *a)
    )
    assert not LocalBundler(handler, RUNTIME, lambda_.Architecture.ARM_64).can_bundle()
    assert LocalBundler(plain, RUNTIME, lambda_.Architecture.ARM_64).can_bundle()


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
