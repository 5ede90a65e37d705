"""Packaging: the wheel carries the handlers and layers, and another CDK app can use it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from opskit.bundling import EXCLUDED, WHEELHOUSE_ENV
from tests.synth import ROOT

CONSUMER_APP = textwrap.dedent(
    """
    import aws_cdk as cdk
    import opskit
    from opskit import PROD, DeploymentNotifier, Monitoring

    app = cdk.App()
    stack = cdk.Stack(app, "Consumer")
    monitoring = Monitoring(stack, "Monitoring", profile=PROD)
    DeploymentNotifier(
        stack, "Notifier", profile=PROD, monitoring=monitoring, webhook_secret_name="team/webhook"
    )
    app.synth()
    print(opskit.__file__)
    """
)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing in the work tree."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "opskit", source / "opskit", ignore=shutil.ignore_patterns(*EXCLUDED))
    dist = tmp_path_factory.mktemp("dist")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        source,
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist,
    )
    [built] = dist.glob("cdk_opskit-*.whl")
    return built


def test_the_wheel_ships_handlers_and_layers_as_package_data_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "opskit/__init__.py",
        "opskit/py.typed",
        "opskit/functions/notification/app.py",
        "opskit/functions/smoke_test/app.py",
        "opskit/layers/common/python/opskit_common/__init__.py",
        "opskit/layers/powertools/requirements.txt",
    ):
        assert expected in names
    assert not [n for n in names if n.startswith(("tests/", "stacks/", "constructs/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_carries_the_licence_text_and_notice_it_declares(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
        licences = {Path(n).name: archive.read(n).decode() for n in names if "/licenses/" in n}
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers and "License-File: NOTICE" in headers
    assert "Apache License" in licences["LICENSE"] and "Version 2.0" in licences["LICENSE"]
    assert "MIT-0" in licences["NOTICE"], "the Powertools layer's licence is named"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtualenv that sees this one's pinned dependencies, but not opskit itself.

    The dependencies are linked, not downloaded again, so installing the wheel
    with `--no-index` proves its declared dependencies resolve.
    """
    root = tmp_path_factory.mktemp("consumer-env")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv)
    deps = root / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(
            ("opskit", "cdk_opskit", "__editable__", "_cdk_opskit", "pip", "setuptools")
        ):
            continue
        if entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    site_packages = run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    ).stdout.strip()
    Path(site_packages, "opskit_test_dependencies.pth").write_text(f"{deps}\n")
    return venv


def test_a_consumer_app_in_another_folder_synthesizes_with_the_handler_code(
    wheel, fresh_venv, tmp_path
):
    python = fresh_venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--no-index", wheel)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "app.py").write_text(CONSUMER_APP)
    outdir = tmp_path / "cdk.out"
    env = {**os.environ, "CDK_OUTDIR": str(outdir), WHEELHOUSE_ENV: str(tmp_path / "wheelhouse")}
    env.pop("PYTHONPATH", None)
    result = run(python, "app.py", cwd=consumer, env=env)

    imported_from = Path(result.stdout.strip().splitlines()[-1])
    assert fresh_venv in imported_from.parents, "opskit came from the installed wheel"
    handler_assets = [
        p for p in outdir.glob("asset.*/app.py") if "WEBHOOK_SECRET_ARN" in p.read_text()
    ]
    assert len(handler_assets) == 1
    assert (outdir / "Consumer.template.json").exists()
