"""Lambda assets built locally when possible, in Docker only when they must be.

`aws-lambda-python-alpha` always bundles in Docker; our development and CI
machines have no Docker engine. Like `aws-lambda-nodejs`, this bundler keeps
one list of steps (`bundling_steps`) that runs on the host or becomes the
command of the runtime's bundling image. The host route needs nothing but the
Python running the CDK app: pip downloads wheels built for the Lambda
platform. CDK itself honours `aws:cdk:bundling-stacks` (`cdk synth --exclusively`,
`cdk diff`), skipping these steps for stacks that are not being bundled.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

PACKAGE_ROOT = Path(__file__).resolve().parent
FUNCTIONS_DIR = PACKAGE_ROOT / "functions"
LAYERS_DIR = PACKAGE_ROOT / "layers"

FORCE_DOCKER_ENV = "OPSKIT_FORCE_DOCKER_BUNDLING"
"""Set to 1 to bundle every asset in the runtime's Docker image."""

EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", "tests", "test_*.py", ".pytest_cache", ".mypy_cache")
"""Never part of an asset, and never part of its hash."""

_PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}

_COPY_TREE = (
    "import shutil, sys; "
    "shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True, "
    "ignore=shutil.ignore_patterns('requirements.txt', *sys.argv[3:]))"
)


def python_version(runtime: lambda_.Runtime) -> str:
    """`python3.14` -> `3.14`."""
    return runtime.name.removeprefix("python")


def bundling_steps(
    source: str,
    output: str,
    *,
    python: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    has_requirements: bool,
) -> list[list[str]]:
    """The commands that turn a handler folder into an asset, for host or container."""
    steps = [[python, "-c", _COPY_TREE, source, output, *EXCLUDED]]
    if has_requirements:
        steps.append(
            [
                python,
                "-m",
                "pip",
                "install",
                "--requirement",
                f"{source}/requirements.txt",
                "--target",
                output,
                "--platform",
                _PLATFORMS[architecture.name],
                "--python-version",
                python_version(runtime),
                "--implementation",
                "cp",
                "--only-binary=:all:",
                "--no-compile",
                "--disable-pip-version-check",
                "--quiet",
            ]
        )
    return steps


@jsii.implements(ILocalBundling)
class LocalBundler:
    """Runs `bundling_steps` with the host's Python; declines when the host cannot."""

    def __init__(
        self,
        source: Path,
        runtime: lambda_.Runtime,
        architecture: lambda_.Architecture,
        subdirectory: str = "",
    ) -> None:
        self.source = source
        self.runtime = runtime
        self.architecture = architecture
        self.subdirectory = subdirectory

    @property
    def has_requirements(self) -> bool:
        return (self.source / "requirements.txt").is_file()

    def can_bundle(self) -> bool:
        if os.environ.get(FORCE_DOCKER_ENV) == "1":
            return False
        return not self.has_requirements or importlib.util.find_spec("pip") is not None

    def try_bundle(self, output_dir: str, *args: object, **kwargs: object) -> bool:
        if not self.can_bundle():
            return False
        for step in bundling_steps(
            str(self.source),
            str(Path(output_dir, self.subdirectory)),
            python=sys.executable,
            runtime=self.runtime,
            architecture=self.architecture,
            has_requirements=self.has_requirements,
        ):
            result = subprocess.run(step, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"bundling {self.source.name} failed: {shlex.join(step[:4])} ...\n"
                    f"{result.stderr.strip()}"
                )
        return True


def asset_code(
    source: Path,
    *,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    output_subdirectory: str = "",
) -> lambda_.AssetCode:
    """A Lambda asset for a handler or layer folder, bundled locally first.

    `output_subdirectory` places the bundle below a folder of the asset, as
    Python layers need (`python/`).
    """
    if not source.is_dir():
        raise FileNotFoundError(f"Lambda source folder {source} does not exist")
    local = LocalBundler(source, runtime, architecture, output_subdirectory)
    docker_command = " && ".join(
        shlex.join(step)
        for step in bundling_steps(
            "/asset-input",
            str(PurePosixPath("/asset-output", output_subdirectory)),
            python="python",
            runtime=runtime,
            architecture=architecture,
            has_requirements=local.has_requirements,
        )
    )
    return lambda_.Code.from_asset(
        str(source),
        exclude=list(EXCLUDED),
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            image=runtime.bundling_image,
            platform=f"linux/{'arm64' if architecture.name == 'arm64' else 'amd64'}",
            command=["bash", "-c", docker_command],
            local=local,
        ),
    )
