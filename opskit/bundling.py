"""Lambda assets built locally when possible, in Docker only when they must be.

`aws-lambda-python-alpha` always bundles in Docker; our development and CI
machines have no Docker engine. Like `aws-lambda-nodejs`, this bundler keeps
one list of steps (`bundling_steps`) that runs on the host or becomes the
command of the runtime's bundling image. The host route needs nothing but the
Python running the CDK app: pip downloads wheels built for the Lambda
platform. CDK itself honours `aws:cdk:bundling-stacks` (`cdk synth --exclusively`,
`cdk diff`), skipping these steps for stacks that are not being bundled.

A folder's dependencies are pinned in one file: a requirements.txt, or a Pipfile.lock,
poetry.lock or uv.lock, which `opskit.lockfiles` exports to the requirements file pip
reads (kept in the wheelhouse's `.exports` folder, and mounted into the bundling image).

Wheels are downloaded once into a wheelhouse entry named by the requirements,
the platform and the Python version, and installed from there without the
index, so a synth after the first needs no package index. An entry appears
whole or not at all: a download that dies midway leaves none. In the bundling
image the wheelhouse is the container's own, so Docker bundling uses the index.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, DockerVolume, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from opskit.errors import BundlingError
from opskit.lockfiles import DEPENDENCY_FILES, LockFileError, Target, dependency_file, export
from opskit.references import cached_by_reference

PACKAGE_ROOT = Path(__file__).resolve().parent
FUNCTIONS_DIR = PACKAGE_ROOT / "functions"
LAYERS_DIR = PACKAGE_ROOT / "layers"

FORCE_DOCKER_ENV = "OPSKIT_FORCE_DOCKER_BUNDLING"
"""Set to 1 to bundle every asset in the runtime's Docker image."""

WHEELHOUSE_ENV = "OPSKIT_WHEELHOUSE"
"""A folder to keep downloaded wheels in, instead of the user's cache folder."""

CONTAINER_WHEELHOUSE = PurePosixPath("/tmp/opskit-wheelhouse")
"""The wheelhouse inside the bundling image: empty at start, gone with the container."""

CONTAINER_EXPORTS = PurePosixPath("/opskit-requirements")
"""Where the bundling image sees a lock file's exported requirements (a mounted folder)."""

EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", "tests", "test_*.py", ".pytest_cache", ".mypy_cache")
"""Never part of an asset, and never part of its hash."""

_PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
_MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}
_IMPLEMENTATION = "cp"

_COPY_TREE = (
    "import shutil, sys; "
    "shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True, "
    "ignore=shutil.ignore_patterns(*sys.argv[3:]))"
)

_FILL_WHEELHOUSE = """\
import os, shutil, subprocess, sys, tempfile
entry, download = sys.argv[1], sys.argv[2:]
if not os.path.isdir(entry):
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(entry))
    try:
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "-d", partial, *download])
        if pip.returncode:
            sys.exit(pip.returncode)
        try:
            os.rename(partial, entry)
        except OSError:
            if not os.path.isdir(entry):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
"""
"""Downloads into a fresh folder and renames it to the entry: an entry is always complete."""

_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")

_FAILURES: list[BundlingError] = []
"""What the bundler raised into jsii, for `unwrapped_bundling_errors` to raise again."""


def function_name(entry: Path, handler: str) -> str:
    """A function's short name: its folder, and its module where that is not `app`.

    `notification` is `functions/notification/app.py`; `user_service.api` is
    `functions/user_service/api.py`. Config (`packaging`) and `make invoke` use it.
    """
    module = handler.rsplit(".", 1)[0]
    return entry.name if module == "app" else f"{entry.name}.{module}"


@cache
def function_names() -> tuple[str, ...]:
    """opskit's own functions by short name: every module that defines `lambda_handler`.
    Read once a process: every environment's config checks its `packaging` keys against it."""
    return tuple(
        sorted(
            function_name(path.parent, f"{path.stem}.lambda_handler")
            for path in FUNCTIONS_DIR.glob("*/*.py")
            if re.search(r"^def lambda_handler\(", path.read_text(encoding="utf-8"), re.M)
        )
    )


@cached_by_reference
def python_version(runtime: lambda_.Runtime) -> str:
    """`python3.14` -> `3.14`."""
    return runtime.name.removeprefix("python")


def wheelhouse() -> Path:
    """Where downloaded wheels are kept: $OPSKIT_WHEELHOUSE, else the user's cache folder."""
    configured = os.environ.get(WHEELHOUSE_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache, "opskit", "wheelhouse")


def wheelhouse_key(requirements: bytes, *, platform: str, python_version: str) -> str:
    """The name of the wheelhouse entry for one requirements file on one platform.

    Named by content, not by folder: folders with equal requirements share an entry,
    and an edited requirements file, another architecture or runtime gets a new one.
    """
    digest = hashlib.sha256()
    for part in (platform.encode(), python_version.encode(), _IMPLEMENTATION.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(requirements)
    tag = f"{_IMPLEMENTATION}{python_version.replace('.', '')}"
    return f"{platform}-{tag}-{digest.hexdigest()[:32]}"


@cached_by_reference
def platform(architecture: lambda_.Architecture) -> str:
    """The pip platform tag of Lambda's wheels for `architecture`."""
    return _PLATFORMS[architecture.name]


@cached_by_reference
def docker_platform(architecture: lambda_.Architecture) -> str:
    """`linux/arm64` or `linux/amd64`: the platform of images built for `architecture`."""
    return "linux/arm64" if architecture.name == "arm64" else "linux/amd64"


@cached_by_reference
def _bundling_image(runtime: lambda_.Runtime) -> DockerImage:
    return runtime.bundling_image


def pip_target(runtime: lambda_.Runtime, architecture: lambda_.Architecture) -> list[str]:
    """pip options that select wheels for Lambda, whatever machine pip runs on."""
    return [
        "--platform",
        platform(architecture),
        "--python-version",
        python_version(runtime),
        "--implementation",
        _IMPLEMENTATION,
        "--only-binary=:all:",
    ]


@dataclass(frozen=True)
class Dependencies:
    """A folder's pinned dependencies, as the pip step reads them."""

    folder: Path
    file: str
    """The folder's dependency file: requirements.txt, Pipfile.lock, poetry.lock or uv.lock."""
    requirements: bytes
    """What pip reads: the requirements file itself, or the lock file exported."""

    @property
    def exported(self) -> bool:
        """A lock file, exported: it names every package, so pip adds none (`--no-deps`)."""
        return self.file != "requirements.txt"

    @property
    def left_out(self) -> tuple[str, ...]:
        """The dependency file and the files that go with it, which no asset contains."""
        return (self.file, *DEPENDENCY_FILES[self.file])

    def wheels_key(self, runtime: lambda_.Runtime, architecture: lambda_.Architecture) -> str:
        return wheelhouse_key(
            self.requirements,
            platform=platform(architecture),
            python_version=python_version(runtime),
        )

    def export_folder(self) -> Path:
        """Where an exported lock is kept on this machine: named by its content."""
        return wheelhouse() / ".exports" / hashlib.sha256(self.requirements).hexdigest()[:32]

    def host_file(self) -> Path:
        """The requirements file pip reads on this machine; an export is written first."""
        if not self.exported:
            return self.folder / self.file
        path = self.export_folder() / "requirements.txt"
        if not path.is_file() or path.read_bytes() != self.requirements:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
                partial.write(self.requirements)
            os.replace(partial.name, path)
        return path

    def container_file(self, source: str = "/asset-input") -> str:
        """The requirements file pip reads in the bundling image."""
        if not self.exported:
            return f"{source}/{self.file}"
        return str(CONTAINER_EXPORTS / "requirements.txt")


def dependencies_of(
    folder: Path, runtime: lambda_.Runtime, architecture: lambda_.Architecture
) -> Dependencies | None:
    """The folder's dependencies for Lambda (None: it pins none), a lock file exported."""
    try:
        found = dependency_file(folder)
        if found is None:
            return None
        if found == "requirements.txt":
            return Dependencies(folder, found, (folder / found).read_bytes())
        target = Target(python_version(runtime), _MACHINES[architecture.name])
        text = export(folder, found, target=target, platform=platform(architecture))
        return Dependencies(folder, found, text.encode("utf-8"))
    except LockFileError as error:
        raise BundlingError(f"bundling {folder.name}: {error}") from None


def bundling_steps(
    source: str,
    output: str,
    *,
    python: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    wheels: str | None,
    requirements: str | None = None,
    exact: bool = False,
    left_out: Sequence[str] = ("requirements.txt",),
) -> list[list[str]]:
    """The commands that turn a handler folder into an asset, for host or container.

    `wheels` is the wheelhouse entry for the folder's requirements (filled from the
    index when it does not exist yet), None when the folder has none. `requirements`
    is the file pip reads (default: the folder's requirements.txt); `exact` says it
    names every package (an exported lock), so pip resolves no further. The files in
    `left_out` (the dependency files) are not copied.
    """
    steps = [[python, "-c", _COPY_TREE, source, output, *left_out, *EXCLUDED]]
    if wheels is not None:
        requirements = requirements or f"{source}/requirements.txt"
        wheels_for_lambda = [*pip_target(runtime, architecture), *(["--no-deps"] if exact else [])]
        quiet = ["--no-color", "--disable-pip-version-check", "--quiet"]
        steps.append(
            [
                python,
                "-c",
                _FILL_WHEELHOUSE,
                wheels,
                "--requirement",
                requirements,
                *wheels_for_lambda,
                *quiet,
            ]
        )
        steps.append(
            [
                python,
                "-m",
                "pip",
                "install",
                "--requirement",
                requirements,
                "--target",
                output,
                "--no-index",
                "--find-links",
                wheels,
                *wheels_for_lambda,
                "--no-compile",
                *quiet,
            ]
        )
    return steps


def _steps(
    dependencies: Dependencies | None,
    source: str,
    output: str,
    *,
    python: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    wheels: Path | PurePosixPath,
    requirements: str | None,
) -> list[list[str]]:
    """`bundling_steps` for a folder with these dependencies, its wheelhouse in `wheels`."""
    if dependencies is None:
        return bundling_steps(
            source, output, python=python, runtime=runtime, architecture=architecture, wheels=None
        )
    return bundling_steps(
        source,
        output,
        python=python,
        runtime=runtime,
        architecture=architecture,
        wheels=str(wheels / dependencies.wheels_key(runtime, architecture)),
        requirements=requirements,
        exact=dependencies.exported,
        left_out=dependencies.left_out,
    )


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
        self.dependencies = dependencies_of(source, runtime, architecture)

    @property
    def has_requirements(self) -> bool:
        return self.dependencies is not None

    def can_bundle(self) -> bool:
        if os.environ.get(FORCE_DOCKER_ENV) == "1":
            return False
        return not self.has_requirements or importlib.util.find_spec("pip") is not None

    def try_bundle(self, output_dir: str, *args: object, **kwargs: object) -> bool:
        dependencies = self.dependencies
        requirements = None if dependencies is None else dependencies.host_file()
        if not self.can_bundle():
            return False  # the export is written: the bundling image mounts its folder
        for step in _steps(
            dependencies,
            str(self.source),
            str(Path(output_dir, self.subdirectory)),
            python=sys.executable,
            runtime=self.runtime,
            architecture=self.architecture,
            wheels=wheelhouse(),
            requirements=None if requirements is None else str(requirements),
        ):
            result = subprocess.run(step, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                failure = self._failure(step, result.stderr)
                _FAILURES.append(failure)
                raise failure
        return True

    def _failure(self, step: list[str], stderr: str) -> BundlingError:
        """One line saying what failed and what to do; pip's output would bury it."""
        name = self.source.name
        target = f"{platform(self.architecture)}, CPython {python_version(self.runtime)}"
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("ERROR:")), None)
        reason = reason or (lines[-1] if lines else "no output")
        if step[2] == _COPY_TREE:
            return BundlingError(f"bundling {name}: copying {self.source} failed: {reason}")
        if step[2] == _FILL_WHEELHOUSE:
            missing = _NO_DISTRIBUTION.search(stderr)
            if missing is None:
                return BundlingError(
                    f"bundling {name}: downloading its requirements for {target} failed: {reason}"
                )
            return BundlingError(
                f"bundling {name}: no wheel of {missing[1]} for {target} in the wheelhouse or"
                f" on the package index; synth once with the index reachable to keep it in"
                f" {wheelhouse()}, or set {WHEELHOUSE_ENV} to a wheelhouse that has it"
            )
        entry = step[step.index("--find-links") + 1]
        return BundlingError(
            f"bundling {name}: installing its requirements for {target} from the wheelhouse"
            f" entry {entry} failed: {reason}; delete that folder to download them again"
        )


@contextmanager
def unwrapped_bundling_errors() -> Iterator[None]:
    """Lets a BundlingError out of the construct whose code failed to bundle.

    CDK bundles while a construct binds its code, calling `LocalBundler` back through
    jsii, which returns the bundler's exception as a RuntimeError holding its text
    behind a JavaScript trace. Around that construct (or as its decorator) this raises
    the BundlingError itself, so an app that catches OpsKitError prints one line.
    """
    try:
        yield
    except RuntimeError as error:
        failure = next((f for f in _FAILURES if str(f) in str(error)), None)
        if failure is None:
            raise
        _FAILURES.remove(failure)
        raise failure from None


def asset_code(
    source: Path,
    *,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    output_subdirectory: str = "",
) -> lambda_.AssetCode:
    """A Lambda asset for a handler or layer folder, bundled locally first.

    `output_subdirectory` places the bundle below a folder of the asset, as
    Python layers need (`python/`). Bind it inside `unwrapped_bundling_errors()`
    for a one-line error when host bundling fails.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"Lambda source folder {source} does not exist")
    local = LocalBundler(source, runtime, architecture, output_subdirectory)
    dependencies = local.dependencies
    docker_command = " && ".join(
        shlex.join(step)
        for step in _steps(
            dependencies,
            "/asset-input",
            str(PurePosixPath("/asset-output", output_subdirectory)),
            python="python",
            runtime=runtime,
            architecture=architecture,
            wheels=CONTAINER_WHEELHOUSE,
            requirements=None if dependencies is None else dependencies.container_file(),
        )
    )
    volumes = None
    if dependencies is not None and dependencies.exported:
        host = str(dependencies.export_folder())
        volumes = [DockerVolume(host_path=host, container_path=str(CONTAINER_EXPORTS))]
    return lambda_.Code.from_asset(
        str(source.resolve()),  # the jsii runtime resolves relative paths from its own cwd
        exclude=list(EXCLUDED),
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            image=_bundling_image(runtime),
            platform=docker_platform(architecture),
            command=["bash", "-c", docker_command],
            volumes=volumes,
            local=local,
        ),
    )
