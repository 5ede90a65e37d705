"""Functions packaged as container images, from a Dockerfile opskit writes.

A function may ship as a container image instead of a zip (`Packaging.CONTAINER_IMAGE`).
Lambda gives an image no layers, so the image holds what the zip function and its
layers would hold: the handler folder's files and pinned requirements, by the same
rules as the zip bundler (`opskit.bundling`: the same files left out, the same pip
options, a lock file exported the same way), and each opskit layer's files and
requirements under /opt, where Lambda extracts layers. The base is the AWS Lambda
Python base image of the function's runtime, for its architecture.

Synthesis writes the Dockerfile and the files it copies into a staging folder and
needs no Docker: CDK builds the image when it publishes the asset (`cdk deploy`,
`cdk-assets publish`), in Docker, with the package index reachable.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

from opskit.bundling import (
    EXCLUDED,
    LAYERS_DIR,
    dependencies_of,
    docker_platform,
    pip_target,
    python_version,
)

BASE_IMAGE = "public.ecr.aws/lambda/python"
"""The AWS Lambda base images for Python, tagged by version (`3.14`)."""

PACKAGING_CONTEXT = "opskit:packaging"
"""Context key: a map of function names (`notification`, `user_service.api`) to `zip` or
`image`, read by every OpsFunction below the construct that sets it."""

_PIP_QUIET = ["--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
_TREE = "/tmp/opskit/tree"
"""Where the requirements stage lays out what the image copies onto its root."""
_LAYER_PATH = (
    "import pathlib, site; "
    f'pth = pathlib.Path("{_TREE}" + site.getsitepackages()[0], "opskit-layers.pth"); '
    'pth.parent.mkdir(parents=True, exist_ok=True); pth.write_text("/opt/python\\n")'
)


class Packaging(Enum):
    """How a function's code reaches Lambda."""

    ZIP = "zip"
    """A zip asset, bundled on the host (or in Docker when it must be), with layers."""
    CONTAINER_IMAGE = "image"
    """A container image asset built from a Dockerfile opskit writes; no layers."""


@dataclass(frozen=True)
class LayerSource:
    """An opskit layer as a folder: what the image copies and installs for it."""

    name: str
    folder: Path
    subdirectory: str
    """Where the folder's bundle goes in the layer: `python` for an installed package."""

    @property
    def target(self) -> str:
        """Where Lambda would extract this layer's bundle."""
        return f"/opt/{self.subdirectory}".rstrip("/")


OPSKIT_LAYERS = {
    "OpsKitCommonLayer": LayerSource("common", LAYERS_DIR / "common", ""),
    "OpsKitPowertoolsLayer": LayerSource("powertools", LAYERS_DIR / "powertools", "python"),
}
"""opskit's shared layers by construct id (one of each per stack)."""


def layer_source(layer: lambda_.ILayerVersion) -> LayerSource | None:
    """The source of one of opskit's own layers; None for any other layer."""
    return OPSKIT_LAYERS.get(layer.node.id)


@dataclass(frozen=True)
class StagedLayer:
    """A layer in the staging folder: `layers/<name>/` and `requirements/layer-<name>.txt`."""

    source: LayerSource
    files: bool
    requirements: bool
    exact: bool


def dockerfile(
    *,
    handler: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    layers: Sequence[StagedLayer],
    function_requirements: bool,
    exact: bool,
) -> str:
    """The Dockerfile of a staging folder laid out by `stage`.

    `function_requirements` says whether `requirements/function.txt` exists; `exact`
    that it is an exported lock, which names every package (`--no-deps`).

    pip runs in a first stage on the build machine's own platform and fetches wheels for
    the function's (as the zip bundler does on the host), into a tree the image copies
    onto its root; the image's own steps only copy. So an arm64 image builds on an x86
    host (a pipeline's asset publishing) without emulation.
    """
    pip = [*pip_target(runtime, architecture), *_PIP_QUIET]
    image_platform = docker_platform(architecture)
    base = f"{BASE_IMAGE}:{python_version(runtime)}"
    built = []
    for layer in layers:
        if layer.requirements:
            file = f"/tmp/opskit/layer-{layer.source.name}.txt"
            install = ["--requirement", file, "--target", f"{_TREE}{layer.source.target}", *pip]
            install += ["--no-deps"] if layer.exact else []
            built += [
                f"COPY requirements/layer-{layer.source.name}.txt {file}",
                f"RUN python3 -m pip install {shlex.join(install)}",
            ]
    if layers:
        built.append(f"RUN python3 -c {shlex.quote(_LAYER_PATH)}")
    if function_requirements:
        install = [
            "--requirement",
            "/tmp/opskit/function.txt",
            "--target",
            _TREE + "${LAMBDA_TASK_ROOT}",
            *pip,
            *(["--no-deps"] if exact else []),
        ]
        built += [
            "COPY requirements/function.txt /tmp/opskit/function.txt",
            "RUN python3 -m pip install " + " ".join(install),
        ]
    lines = [
        "# Written by opskit: the files and pinned requirements of this function's zip asset",
        "# and of its layers, on the AWS Lambda base image of its runtime. Docker (BuildKit)",
        "# builds it when the asset is published; nothing here runs at synth.",
    ]
    if built:
        lines += [
            "",
            "# Requirements, fetched for the function's platform by pip on the build machine's",
            "# (no emulation), into a tree laid out like the image: layers under /opt, a .pth",
            "# putting /opt/python on sys.path, the function's own in the task root.",
            f"FROM --platform=$BUILDPLATFORM {base} AS requirements",
            *built,
        ]
    lines += ["", f"FROM --platform={image_platform} {base}"]
    if built:
        lines.append(f"COPY --from=requirements {_TREE}/ /")
    for layer in layers:
        if layer.files:
            lines.append(f"COPY layers/{layer.source.name}/ {layer.source.target}/")
    lines += ["COPY function/ ${LAMBDA_TASK_ROOT}/", f'CMD ["{handler}"]', ""]
    return "\n".join(lines)


def _copy(source: Path, destination: Path, left_out: Sequence[str]) -> None:
    """The folder's files as the zip bundler copies them."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*left_out, *EXCLUDED))


def stage(
    entry: Path,
    *,
    handler: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    layers: Sequence[LayerSource],
) -> Path:
    """A folder with the Dockerfile and what it copies, named by its content.

    Raises BundlingError (as the zip bundler would) for a folder whose dependency
    files cannot be read.
    """
    root = Path(tempfile.gettempdir(), "opskit-images")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        (scratch / "requirements").mkdir()
        function = dependencies_of(entry, runtime, architecture)
        _copy(entry, scratch / "function", function.left_out if function else ())
        if function is not None:
            (scratch / "requirements" / "function.txt").write_bytes(function.requirements)
        staged = []
        for layer in layers:
            dependencies = dependencies_of(layer.folder, runtime, architecture)
            files = scratch / "layers" / layer.name
            _copy(layer.folder, files, dependencies.left_out if dependencies else ())
            if dependencies is not None:
                (scratch / "requirements" / f"layer-{layer.name}.txt").write_bytes(
                    dependencies.requirements
                )
            has_files = any(path.is_file() for path in files.rglob("*"))
            if not has_files:
                shutil.rmtree(files)
            exact = dependencies is not None and dependencies.exported
            staged.append(StagedLayer(layer, has_files, dependencies is not None, exact))
        (scratch / "Dockerfile").write_text(
            dockerfile(
                handler=handler,
                runtime=runtime,
                architecture=architecture,
                layers=staged,
                function_requirements=function is not None,
                exact=function is not None and function.exported,
            ),
            encoding="utf-8",
        )
        final = root / _digest(scratch)
        try:
            scratch.rename(final)
        except OSError:
            if not final.is_dir():
                raise
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(name).to_bytes(4, "big") + name + len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.hexdigest()[:32]


def image_code(
    entry: Path,
    *,
    handler: str,
    runtime: lambda_.Runtime,
    architecture: lambda_.Architecture,
    layers: Sequence[LayerSource],
) -> lambda_.AssetImageCode:
    """An image asset for the handler folder and layers; built when it is published."""
    folder = stage(
        entry, handler=handler, runtime=runtime, architecture=architecture, layers=layers
    )
    platform = ecr_assets.Platform.custom(docker_platform(architecture))
    return lambda_.Code.from_asset_image(str(folder), platform=platform)
