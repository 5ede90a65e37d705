"""A handler folder's lock file, read into the pinned requirements the bundler's pip step installs.

A folder may pin its dependencies the ways `aws-lambda-python-alpha`'s PythonFunction
accepts: ``requirements.txt``, ``Pipfile.lock``, ``poetry.lock`` (with its
``pyproject.toml``) or ``uv.lock``. A requirements file goes to pip as it is. A lock
file is read here, without pipenv, poetry or uv, into a requirements file that names
every package the function needs, one ``name==version`` line each with every hash the
lock records, so that pip installs exactly the locked set (``--no-deps``) and checks
each wheel it downloads.

What is read, and how:

- the runtime dependencies only: Pipfile.lock's ``default`` section; for poetry.lock and
  uv.lock, what the project's main dependencies need, followed through the lock's
  dependency graph (Poetry's groups and dev dependencies, and uv's dev dependencies, are
  left out, as are the extras of the project itself);
- environment markers are evaluated for Lambda (Linux, the function's architecture,
  CPython of its runtime), not for the machine that bundles; pip would evaluate them
  for this machine;
- extras of dependencies (``requests[socks]``) bring in what the lock lists for them;
- packages from an index other than PyPI add that index (``--extra-index-url``);
  packages from a path, a URL or a VCS repository cannot be pinned this way and are
  refused, naming the package;
- a lock with hashes for some packages and none for others is refused: pip checks
  either every requirement or none.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

DEPENDENCY_FILES: dict[str, tuple[str, ...]] = {
    "requirements.txt": (),
    "Pipfile.lock": ("Pipfile",),
    "poetry.lock": ("pyproject.toml",),
    "uv.lock": ("pyproject.toml",),
}
"""Each dependency file a folder may have, with the files that go with it."""

PYPI_INDEXES = frozenset({"https://pypi.org/simple", "https://pypi.python.org/simple"})
_NOT_FROM_AN_INDEX = (
    "git",
    "hg",
    "svn",
    "bzr",
    "path",
    "file",
    "url",
    "editable",
    "directory",
    "virtual",
)


class LockFileError(ValueError):
    """The lock file cannot be read into pinned requirements; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where the function runs: what environment markers are evaluated against."""

    python_version: str
    """`3.14`."""
    machine: str
    """`aarch64` or `x86_64`."""

    def environment(self, extra: str = "") -> dict[str, str]:
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{self.python_version}.0",
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": f"{self.python_version}.0",
            "python_version": self.python_version,
            "sys_platform": "linux",
            "extra": extra,
        }

    def allows(self, marker: str | None, extras: Iterable[str] = ()) -> bool:
        """Whether `marker` holds on Lambda, for the package installed with `extras`."""
        if not marker:
            return True
        try:
            parsed = Marker(marker)
        except InvalidMarker as error:
            raise LockFileError(f"marker {marker!r} is not valid: {error}") from None
        return any(parsed.evaluate(self.environment(extra)) for extra in ("", *extras))


@dataclass(frozen=True)
class Pin:
    """One locked package: what pip is asked for."""

    name: str
    version: str
    hashes: tuple[str, ...]

    def line(self) -> str:
        hashes = "".join(f" \\\n    --hash={digest}" for digest in self.hashes)
        return f"{self.name}=={self.version}{hashes}"


@dataclass
class Locked:
    """The packages a lock pins for the target, and the indexes they come from."""

    pins: dict[str, Pin] = field(default_factory=dict)
    indexes: list[str] = field(default_factory=list)

    def add(self, pin: Pin, index: str | None = None) -> None:
        self.pins[canonicalize_name(pin.name)] = pin
        if index and index.rstrip("/") not in PYPI_INDEXES and index not in self.indexes:
            self.indexes.append(index)

    def requirements(self, *, target: Target, platform: str) -> str:
        """The requirements file; equal pins give equal files, whichever lock they came from."""
        pins = [self.pins[name] for name in sorted(self.pins)]
        hashed = [pin for pin in pins if pin.hashes]
        if hashed and len(hashed) != len(pins):
            bare = next(pin for pin in pins if not pin.hashes)
            raise LockFileError(
                f"{bare.name} has no hashes while {hashed[0].name} has; pip checks either every"
                " requirement or none"
            )
        lines = [
            f"# Exported by opskit for CPython {target.python_version} on {platform}: all pinned",
            *(f"--extra-index-url {index}" for index in self.indexes),
            *(pin.line() for pin in pins),
        ]
        return "\n".join(lines) + "\n"


def dependency_file(folder: Path) -> str | None:
    """The folder's one dependency file (None: it has none); two of them are an error."""
    found = [name for name in DEPENDENCY_FILES if (folder / name).is_file()]
    if len(found) > 1:
        listed = ", ".join(found[:-1]) + f" and {found[-1]}"
        raise LockFileError(f"{folder} has {listed}; keep one of them")
    if not found and (folder / "Pipfile").is_file():
        raise LockFileError(f"{folder} has a Pipfile but no Pipfile.lock; run `pipenv lock`")
    return found[0] if found else None


def export(folder: Path, lock_file: str, *, target: Target, platform: str) -> str:
    """The requirements file pip installs for `folder`'s `lock_file` on `target`."""
    readers = {"Pipfile.lock": _pipfile_lock, "poetry.lock": _poetry_lock, "uv.lock": _uv_lock}
    try:
        locked = readers[lock_file](folder, target)
        return locked.requirements(target=target, platform=platform)
    except LockFileError as error:
        raise LockFileError(f"{lock_file}: {error}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise LockFileError(f"{path.name} is not TOML: {error}") from None


def _exact_version(name: str, version: Any) -> str:
    """`1.2.3` (or `==1.2.3`) as the version to pin; anything looser is not a lock."""
    text = str(version).removeprefix("==") if isinstance(version, str) else ""
    try:
        Version(text)
    except InvalidVersion:
        raise LockFileError(f"{name} is locked at {version!r}, which is not one version") from None
    return text


def _refuse_unindexed(name: str, source: Mapping[str, Any]) -> None:
    kind = next((key for key in _NOT_FROM_AN_INDEX if key in source), None)
    if kind is not None:
        raise LockFileError(
            f"{name} comes from a {kind} ({source[kind]}), not a package index; opskit installs"
            " wheels from an index only"
        )


def _pipfile_lock(folder: Path, target: Target) -> Locked:
    try:
        lock = json.loads((folder / "Pipfile.lock").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LockFileError(f"not JSON: {error}") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("default", {}), dict):
        raise LockFileError('expected an object with a "default" object of packages')
    sources = lock.get("_meta", {}).get("sources") or []
    indexes = {s.get("name"): s.get("url") for s in sources if isinstance(s, dict)}
    locked = Locked()
    for name, entry in lock.get("default", {}).items():
        if not isinstance(entry, dict):
            raise LockFileError(f"entry {name!r} is not an object")
        _refuse_unindexed(name, entry)
        if not target.allows(entry.get("markers")):
            continue
        pin = Pin(name, _exact_version(name, entry.get("version")), tuple(entry.get("hashes", ())))
        locked.add(pin, indexes.get(entry.get("index")))
    return locked


@dataclass(frozen=True)
class _Wanted:
    """A dependency on the way through the graph: its name, extras and version range."""

    name: str
    extras: frozenset[str] = frozenset()
    versions: tuple[SpecifierSet, ...] = ()
    """Any of these (Poetry's ``||``); empty: any version."""
    version: str | None = None
    """uv names the version when the lock holds several of one package."""


class _Graph:
    """The packages of a poetry.lock or uv.lock by name, walked from the project's needs."""

    def __init__(self, packages: list[dict[str, Any]], target: Target) -> None:
        self.target = target
        self.by_name: dict[str, list[dict[str, Any]]] = {}
        for package in packages:
            if not isinstance(package, dict) or not isinstance(package.get("name"), str):
                raise LockFileError("a [[package]] has no name")
            self.by_name.setdefault(canonicalize_name(package["name"]), []).append(package)

    def choose(self, wanted: _Wanted) -> dict[str, Any]:
        candidates = self.by_name.get(canonicalize_name(wanted.name))
        if not candidates:
            raise LockFileError(f"{wanted.name} is needed but not locked; lock again")
        if wanted.version is not None:
            candidates = [p for p in candidates if p.get("version") == wanted.version]
        if wanted.versions and len(candidates) > 1:
            candidates = [p for p in candidates if _satisfies(p.get("version"), wanted.versions)]
        if len(candidates) > 1:
            candidates = [
                p
                for p in candidates
                if any(self.target.allows(m) for m in p.get("resolution-markers") or [""])
            ]
        if len(candidates) != 1:
            versions = ", ".join(str(p.get("version")) for p in candidates) or "none"
            raise LockFileError(
                f"cannot tell which locked {wanted.name} Lambda needs (candidates: {versions})"
            )
        return candidates[0]

    def walk(self, roots: Iterable[_Wanted], needs: Any) -> list[tuple[dict[str, Any], set[str]]]:
        """Every package the roots need, with the extras it is needed with.

        `needs(package, extras)` lists what one package needs for those extras.
        """
        chosen: dict[int, tuple[dict[str, Any], set[str]]] = {}
        queue = list(roots)
        while queue:
            wanted = queue.pop()
            package = self.choose(wanted)
            known = chosen.get(id(package))
            if known is not None and wanted.extras <= known[1]:
                continue
            extras = set(wanted.extras) | (known[1] if known else set())
            chosen[id(package)] = (package, extras)
            queue.extend(needs(package, extras))
        return list(chosen.values())


def _satisfies(version: Any, specifiers: Iterable[SpecifierSet]) -> bool:
    try:
        parsed = Version(str(version))
    except InvalidVersion:
        return False
    return any(specifier.contains(parsed, prereleases=True) for specifier in specifiers)


_POETRY_TERM = re.compile(r"^(\^|~=|~|>=|<=|!=|==|>|<|=)?([0-9A-Za-z.*+!-]+)$")
_OPERATOR_SPACE = re.compile(r"(\^|~=|~|>=|<=|!=|==|>|<|=)\s+")


def _poetry_specifiers(constraint: str) -> tuple[SpecifierSet, ...]:
    """A Poetry version constraint (``^1.2``, ``~1.2``, ``>=1,<2 || 3.*``) as PEP 440 sets."""
    alternatives = []
    for alternative in re.split(r"\s*\|\|?\s*", constraint.strip()):
        parts = []
        joined = _OPERATOR_SPACE.sub(r"\1", alternative.strip())
        for term in re.split(r"\s*,\s*|\s+", joined):
            if term in ("", "*"):
                continue
            found = _POETRY_TERM.match(term)
            if found is None:
                raise LockFileError(f"version constraint {constraint!r} is not understood")
            operator, version = found.groups()
            parts.append(_pep440(operator or "==", version, constraint))
        try:
            alternatives.append(SpecifierSet(",".join(parts)))
        except InvalidSpecifier:
            raise LockFileError(f"version constraint {constraint!r} is not understood") from None
    return tuple(alternatives)


def _pep440(operator: str, version: str, constraint: str) -> str:
    if operator not in ("^", "~"):
        return f"{'==' if operator == '=' else operator}{version}"
    try:
        release = list(Version(version).release)
    except InvalidVersion:
        raise LockFileError(f"version constraint {constraint!r} is not understood") from None
    if operator == "^":
        first = next((i for i, part in enumerate(release) if part != 0), len(release) - 1)
        upper = [*release[:first], release[first] + 1]
    else:
        upper = [release[0], release[1] + 1] if len(release) > 1 else [release[0] + 1]
    return f">={version},<{'.'.join(str(part) for part in upper)}"


def _poetry_dependency(name: str, spec: Any) -> list[dict[str, Any]]:
    """One dependency of pyproject or the lock, in its three forms, as tables."""
    if isinstance(spec, str):
        return [{"version": spec}]
    if isinstance(spec, dict):
        return [spec]
    if isinstance(spec, list) and all(isinstance(item, dict) for item in spec):
        return spec
    raise LockFileError(f"dependency {name!r} has an unreadable specification {spec!r}")


def _poetry_wanted(
    target: Target, name: str, spec: Any, *, extras: Iterable[str] = (), optional_ok: bool = False
) -> _Wanted | None:
    """The dependency `name` if Lambda needs it: some form of it applies to the target."""
    for form in _poetry_dependency(name, spec):
        if form.get("optional") and not optional_ok:
            continue
        if not target.allows(form.get("markers"), extras):
            continue
        python = form.get("python")
        if python and not any(target.python_version in s for s in _poetry_specifiers(python)):
            continue
        return _Wanted(
            name,
            frozenset(form.get("extras") or ()),
            _poetry_specifiers(str(form.get("version") or "*")),
        )
    return None


def _requirement(text: str, target: Target, extras: Iterable[str] = ()) -> _Wanted | None:
    """A PEP 508 requirement if Lambda needs it."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise LockFileError(f"requirement {text!r} is not valid: {error}") from None
    if requirement.marker is not None and not target.allows(str(requirement.marker), extras):
        return None
    versions = (requirement.specifier,) if str(requirement.specifier) else ()
    return _Wanted(requirement.name, frozenset(requirement.extras), versions)


def _poetry_lock(folder: Path, target: Target) -> Locked:
    if not (folder / "pyproject.toml").is_file():
        raise LockFileError("no pyproject.toml beside it, which names the project's dependencies")
    project = _read_toml(folder / "pyproject.toml")
    lock = _read_toml(folder / "poetry.lock")
    graph = _Graph(lock.get("package", []), target)

    declared = project.get("project", {}).get("dependencies")
    poetry = project.get("tool", {}).get("poetry", {}).get("dependencies", {})
    if declared is not None:
        roots = [_requirement(text, target) for text in declared]
    else:
        roots = [
            _poetry_wanted(target, name, spec)
            for name, spec in poetry.items()
            if name.lower() != "python"
        ]

    def needs(package: dict[str, Any], extras: set[str]) -> list[_Wanted]:
        by_extra = package.get("extras", {})
        wanted_optional = {
            canonicalize_name(re.split(r"[\s(\[;<>=!~]", item, maxsplit=1)[0])
            for extra in extras
            for item in by_extra.get(extra, [])
        }
        found = []
        for name, spec in package.get("dependencies", {}).items():
            optional_ok = canonicalize_name(name) in wanted_optional
            wanted = _poetry_wanted(target, name, spec, extras=extras, optional_ok=optional_ok)
            if wanted is not None:
                found.append(wanted)
        return found

    locked = Locked()
    for package, _ in graph.walk([root for root in roots if root is not None], needs):
        name = str(package["name"])
        source = package.get("source") or {}
        if source.get("type") not in (None, "legacy"):
            _refuse_unindexed(name, {source["type"]: source.get("url")})
        hashes = tuple(f["hash"] for f in package.get("files", []) if f.get("hash"))
        pin = Pin(name, _exact_version(name, package.get("version")), tuple(sorted(set(hashes))))
        locked.add(pin, source.get("url") if source.get("type") == "legacy" else None)
    return locked


def _is_the_project(source: Any) -> bool:
    """uv locks the project itself as a package from the folder: ``{virtual = "."}``."""
    return isinstance(source, dict) and "." in (source.get("virtual"), source.get("editable"))


def _uv_lock(folder: Path, target: Target) -> Locked:
    lock = _read_toml(folder / "uv.lock")
    packages = lock.get("package", [])
    graph = _Graph(packages, target)
    projects = [p for p in packages if _is_the_project(p.get("source"))]
    if len(projects) != 1:
        raise LockFileError("expected exactly one project (source virtual or editable '.')")
    project = projects[0]

    def dependency(entry: Any, extras: Iterable[str]) -> _Wanted | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise LockFileError(f"a dependency entry {entry!r} has no name")
        if not target.allows(entry.get("marker"), extras):
            return None
        return _Wanted(entry["name"], frozenset(entry.get("extra") or ()), (), entry.get("version"))

    def needs(package: dict[str, Any], extras: set[str]) -> list[_Wanted]:
        optional = package.get("optional-dependencies", {})
        entries = [*package.get("dependencies", [])]
        entries += [entry for extra in sorted(extras) for entry in optional.get(extra, [])]
        return [w for w in (dependency(e, extras) for e in entries) if w is not None]

    locked = Locked()
    for package, _ in graph.walk(needs(project, set()), needs):
        name = str(package["name"])
        source = package.get("source") or {}
        _refuse_unindexed(name, source)
        files = [package.get("sdist") or {}, *package.get("wheels", [])]
        hashes = tuple(sorted({f["hash"] for f in files if f.get("hash")}))
        pin = Pin(name, _exact_version(name, package.get("version")), hashes)
        locked.add(pin, source.get("registry"))
    return locked
