"""Builds the sdist and wheel and checks them as a user meets them: `make package-check`.

1. build: the sdist from a clean copy of the sources (nothing lands in the work tree),
   then the wheel from the unpacked sdist, as `python -m build` does, so a file the
   sdist forgot fails here;
2. `twine check --strict`: the metadata and README render on the package index;
3. one version: the `__version__` of opskit/__init__.py is the distributions' version
   (and the release tag's, with --expect-version), and CHANGELOG.md has a section for it;
4. the wheel installs into a fresh virtualenv, and a consumer CDK app in another folder
   synthesizes with the handler code in its assets, importing opskit from that venv.

The release workflow publishes exactly the files this leaves in --dist. The tests reuse
these functions with --offline: the fresh venv then sees this interpreter's installed
dependencies (linked, not downloaded) and the wheel installs with --no-index, which
still proves its declared dependencies resolve. Without it, pip resolves them from the
package index, as `pip install cdk-opskit` will.

    python scripts/package_check.py [--dist dist] [--expect-version 0.1.0] [--offline]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE")
SOURCE_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache")
LINK_EXCLUDED = ("opskit", "cdk_opskit", "__editable__", "_cdk_opskit", "setuptools")

BUILD = (
    "import sys, setuptools.build_meta as backend; "
    "print(getattr(backend, sys.argv[1])(sys.argv[2]))"
)

CONSUMER_APP = textwrap.dedent(
    """
    import importlib.metadata

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
    print(opskit.__version__, importlib.metadata.version("cdk-opskit"))
    print(opskit.__file__)
    """
)


class PackageCheckError(RuntimeError):
    """A distribution, or what a user does with it, is not right."""


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Consumer:
    """What the consumer app did in the fresh venv."""

    versions: tuple[str, str]
    """`opskit.__version__` and the installed distribution's metadata version."""
    imported_from: Path
    outdir: Path


def run(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise PackageCheckError(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


def declared_version(root: Path = ROOT) -> str:
    """`__version__` of opskit/__init__.py, read without importing it (nor aws_cdk)."""
    tree = ast.parse((root / "opskit" / "__init__.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    raise PackageCheckError("opskit/__init__.py assigns no literal __version__")


def build(outdir: Path, *, root: Path = ROOT) -> Distributions:
    """The sdist from a copy of the sources, then the wheel from the unpacked sdist."""
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="opskit-build-") as scratch:
        source = Path(scratch, "source")
        source.mkdir()
        for name in SOURCES:
            shutil.copy(root / name, source / name)
        shutil.copytree(
            root / "opskit", source / "opskit", ignore=shutil.ignore_patterns(*SOURCE_EXCLUDED)
        )
        sdist = (
            outdir
            / run(sys.executable, "-c", BUILD, "build_sdist", outdir, cwd=source)
            .stdout.strip()
            .splitlines()[-1]
        )
        unpacked = Path(scratch, "sdist")
        with tarfile.open(sdist) as archive:
            archive.extractall(unpacked, filter="data")
        [tree] = unpacked.iterdir()
        wheel = (
            outdir
            / run(sys.executable, "-c", BUILD, "build_wheel", outdir, cwd=tree)
            .stdout.strip()
            .splitlines()[-1]
        )
    return Distributions(sdist=sdist, wheel=wheel)


def twine_check(distributions: Distributions) -> str:
    """`twine check --strict` on both files; its report, one line per file (twine's console
    would wrap long paths at 80 columns when its output is not a terminal)."""
    result = run(
        sys.executable,
        "-m",
        "twine",
        "--no-color",
        "check",
        "--strict",
        distributions.sdist,
        distributions.wheel,
        env={**os.environ, "COLUMNS": "1000"},
    )
    return result.stdout.strip()


def metadata_version(distributions: Distributions) -> tuple[str, str]:
    """The Version header of the sdist's PKG-INFO and of the wheel's METADATA."""
    with tarfile.open(distributions.sdist) as archive:
        [info] = [
            m
            for m in archive.getmembers()
            if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
        ]
        sdist_headers = archive.extractfile(info).read().decode()  # type: ignore[union-attr]
    with zipfile.ZipFile(distributions.wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        wheel_headers = archive.read(name).decode()
    parser = HeaderParser()
    return parser.parsestr(sdist_headers)["Version"], parser.parsestr(wheel_headers)["Version"]


def changelog_versions(root: Path = ROOT) -> list[str]:
    """The section names of CHANGELOG.md, newest first (`Unreleased`, `0.1.0`, ...)."""
    return re.findall(r"^## \[([^\]]+)\]", (root / "CHANGELOG.md").read_text(), re.MULTILINE)


def check_versions(
    distributions: Distributions, *, expected: str | None = None, root: Path = ROOT
) -> str:
    """The one version, everywhere it must appear; fails naming the odd one out."""
    declared = declared_version(root)
    sdist, wheel = metadata_version(distributions)
    if {sdist, wheel} != {declared}:
        raise PackageCheckError(
            f"opskit.__version__ is {declared}, but the sdist says {sdist} and the wheel {wheel}"
        )
    if expected is not None and expected != declared:
        raise PackageCheckError(f"the release tag names {expected}, but opskit is {declared}")
    if declared not in changelog_versions(root):
        raise PackageCheckError(f"CHANGELOG.md has no '## [{declared}]' section")
    return declared


def fresh_venv(root: Path, *, offline: bool) -> Path:
    """A new virtualenv; `offline`: made without pip (bootstrapping one takes longer than
    the install), it sees this interpreter's installed packages, pip included, except
    opskit itself and setuptools."""
    venv = root / "venv"
    run(sys.executable, "-m", "venv", *(["--without-pip"] if offline else []), venv)
    if not offline:
        return venv
    deps = root / "deps"
    deps.mkdir()
    site_dirs = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    for site_dir in site_dirs:
        for entry in site_dir.iterdir():
            if entry.name.startswith(LINK_EXCLUDED) or entry.suffix == ".pth":
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    purelib = run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    ).stdout.strip()
    Path(purelib, "opskit_check_dependencies.pth").write_text(f"{deps}\n")
    return venv


def install(venv: Path, wheel: Path, *, offline: bool) -> None:
    run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        *(["--no-index"] if offline else []),
        wheel,
    )


def synthesize_consumer(venv: Path, workdir: Path) -> Consumer:
    """A CDK app in `workdir` that imports the installed opskit and synthesizes."""
    consumer = workdir / "consumer"
    consumer.mkdir()
    (consumer / "app.py").write_text(CONSUMER_APP)
    outdir = workdir / "cdk.out"
    env = {**os.environ, "CDK_OUTDIR": str(outdir)}
    env.pop("PYTHONPATH", None)
    lines = run(venv / "bin" / "python", "app.py", cwd=consumer, env=env).stdout.splitlines()
    declared, installed = lines[-2].split()
    result = Consumer(versions=(declared, installed), imported_from=Path(lines[-1]), outdir=outdir)
    if venv not in result.imported_from.parents:
        raise PackageCheckError(f"the consumer imported opskit from {result.imported_from}")
    handlers = [p for p in outdir.glob("asset.*/app.py") if "WEBHOOK_SECRET_ARN" in p.read_text()]
    if len(handlers) != 1 or not (outdir / "Consumer.template.json").exists():
        raise PackageCheckError(f"the consumer's {outdir} lacks its template or handler asset")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--expect-version", help="the release tag's version (v stripped)")
    parser.add_argument("--offline", action="store_true", help="link dependencies, --no-index")
    args = parser.parse_args(argv)

    try:
        if args.dist.exists():
            shutil.rmtree(args.dist)
        distributions = build(args.dist)
        print(f"built      {distributions.sdist.name}, {distributions.wheel.name}")
        print(textwrap.indent(twine_check(distributions), "twine      "))
        version = check_versions(distributions, expected=args.expect_version)
        print(f"version    {version}: opskit.__version__, sdist, wheel and CHANGELOG.md agree")
        with tempfile.TemporaryDirectory(prefix="opskit-consumer-") as scratch:
            venv = fresh_venv(Path(scratch), offline=args.offline)
            install(venv, distributions.wheel, offline=args.offline)
            consumer = synthesize_consumer(venv, Path(scratch))
            if consumer.versions != (version, version):
                raise PackageCheckError(f"the installed wheel reports versions {consumer.versions}")
        print(f"consumer   synthesized in a fresh venv with opskit {version} from the wheel")
    except PackageCheckError as error:
        print(f"package-check: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
