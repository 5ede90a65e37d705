"""Builds the sdist and wheel and checks them as a user meets them: `make package-check`.

1. build: the sdist from a clean copy of the sources (nothing lands in the work tree),
   then the wheel from the unpacked sdist, as `python -m build` does, so a file the
   sdist forgot fails here;
2. `twine check --strict`: the metadata and README render on the package index;
3. one version: the `__version__` of opskit/__init__.py is the distributions' version
   (and the release tag's, with --expect-version), and CHANGELOG.md has a section for it;
4. the wheel installs into a fresh virtualenv, and the README's examples, assembled into one
   app the way a reader does, synthesize in another folder with the handler code in their
   assets, importing opskit from that venv.

With --lowest, step 4 installs each dependency at the oldest release pyproject.toml allows
(`aws-cdk-lib>=2.269.0` installs 2.269.0): a lower bound that no longer holds fails here,
not in a user's app. CI runs it on the oldest Python the package allows.

The release workflow publishes exactly the files this leaves in --dist. The tests reuse
these functions with --offline: the fresh venv then sees this interpreter's installed
dependencies (linked, not downloaded) and the wheel installs with --no-index, which
still proves its declared dependencies resolve. Without it, pip resolves them from the
package index, as `pip install cdk-opskit` will.

    python scripts/package_check.py [--dist dist] [--expect-version 0.1.0] [--offline | --lowest]
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
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE")
SOURCE_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache")
LINK_EXCLUDED = ("opskit", "cdk_opskit", "__editable__", "_cdk_opskit", "setuptools")

BUILD = (
    "import sys, setuptools.build_meta as backend; "
    "print(getattr(backend, sys.argv[1])(sys.argv[2]))"
)

README = ROOT / "README.md"
SYNTH = "app.synth()\n"
_PYTHON_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
READER_FILES = {"handlers/nightly/app.py": "def lambda_handler(event, context):\n    return {}\n"}
REPORT_VERSIONS = textwrap.dedent(
    """
    import importlib.metadata

    import opskit

    print(opskit.__version__, importlib.metadata.version("cdk-opskit"))
    print(opskit.__file__)
    """
)


class PackageCheckError(RuntimeError):
    """A distribution, or what a user does with it, is not right."""


def python_blocks(text: str) -> list[str]:
    """Each fenced Python block, dedented (blocks inside list items are indented)."""
    return [textwrap.dedent(body) for _, body in _PYTHON_BLOCK.findall(text)]


def readme_app(readme: Path = README) -> str:
    """The README's examples as one app: the first is a whole app, ending in `app.synth()`;
    each later one adds to it before that call."""
    whole_app, *additions = python_blocks(readme.read_text())
    if not whole_app.endswith(SYNTH):
        raise PackageCheckError(f"{readme.name}'s first Python example does not end in {SYNTH}")
    return "".join([whole_app.removesuffix(SYNTH), *additions, SYNTH])


def write_reader_files(folder: Path) -> None:
    """What the README's examples expect beside the app: the handler folder its
    OpsFunction example bundles."""
    for path, text in READER_FILES.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)


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
        sdist_headers = HeaderParser().parsestr(
            archive.extractfile(info).read().decode()  # type: ignore[union-attr]
        )
    return sdist_headers["Version"], wheel_metadata(distributions.wheel)["Version"]


def wheel_metadata(wheel: Path) -> Message:
    """The headers of the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return HeaderParser().parsestr(archive.read(name).decode())


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


def lowest_requirements(wheel: Path) -> list[str]:
    """The wheel's install requirements for this Python, each pinned to the oldest release it
    allows (`aws-cdk-lib<3,>=2.269.0` -> `aws-cdk-lib==2.269.0`); extras' are left out."""
    pinned = []
    for line in wheel_metadata(wheel).get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        floors = [s.version for s in requirement.specifier if s.operator in (">=", "==", "~=")]
        if not floors:
            raise PackageCheckError(
                f"the dependency {line!r} declares no lower bound, so its oldest release "
                "cannot be checked: give it one (>=) in pyproject.toml"
            )
        pinned.append(f"{requirement.name}=={floors[0]}")
    return pinned


def install(venv: Path, wheel: Path, *, offline: bool, requirements: Sequence[str] = ()) -> None:
    """The wheel into `venv`; `requirements` constrain its dependencies further."""
    run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        *(["--no-index"] if offline else []),
        wheel,
        *requirements,
    )


def synthesize_consumer(venv: Path, workdir: Path, *, validate: bool = True) -> Consumer:
    """The README's app, in a folder of `workdir`, importing the installed opskit;
    `validate`: with CDK's built-in template validation, which checks opskit's
    acknowledgement ids against that aws-cdk-lib."""
    consumer = workdir / "consumer"
    write_reader_files(consumer)
    (consumer / "app.py").write_text(readme_app() + REPORT_VERSIONS)
    outdir = workdir / "cdk.out"
    env = {**os.environ, "CDK_OUTDIR": str(outdir)}
    env.pop("PYTHONPATH", None)
    if not validate:
        env["CDK_VALIDATION"] = "false"
    lines = run(venv / "bin" / "python", "app.py", cwd=consumer, env=env).stdout.splitlines()
    declared, installed = lines[-2].split()
    result = Consumer(versions=(declared, installed), imported_from=Path(lines[-1]), outdir=outdir)
    if venv not in result.imported_from.parents:
        raise PackageCheckError(f"the consumer imported opskit from {result.imported_from}")
    handlers = [p for p in outdir.glob("asset.*/app.py") if "WEBHOOK_SECRET_ARN" in p.read_text()]
    if len(handlers) != 1 or not list(outdir.glob("*.template.json")):
        raise PackageCheckError(f"the consumer's {outdir} lacks its template or handler asset")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--expect-version", help="the release tag's version (v stripped)")
    sources = parser.add_mutually_exclusive_group()
    sources.add_argument("--offline", action="store_true", help="link dependencies, --no-index")
    sources.add_argument(
        "--lowest", action="store_true", help="each dependency at the oldest release allowed"
    )
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
            lowest = lowest_requirements(distributions.wheel) if args.lowest else []
            install(venv, distributions.wheel, offline=args.offline, requirements=lowest)
            consumer = synthesize_consumer(venv, Path(scratch))
            if consumer.versions != (version, version):
                raise PackageCheckError(f"the installed wheel reports versions {consumer.versions}")
        with_lowest = f", {', '.join(lowest)}" if lowest else ""
        print(
            "consumer   the README's examples synthesized in a fresh venv with opskit "
            f"{version} from the wheel{with_lowest}"
        )
    except PackageCheckError as error:
        print(f"package-check: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
