"""Packaging: what `make package-check` (scripts/package_check.py) checks before every release,
run here with the same functions: the sdist and the wheel built from it carry the handlers,
layers and licences, pass `twine check`, agree on the one version, and the README's examples
synthesize as an app in another folder with the installed wheel in a fresh virtualenv
(dependencies linked from this one, installed with --no-index). `--lowest` (CI) pins each
dependency to the oldest release the wheel allows; here, which pins it makes."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import opskit
from scripts import package_check
from scripts.package_check import (
    Consumer,
    Distributions,
    PackageCheckError,
    build,
    changelog_versions,
    check_versions,
    declared_version,
    fresh_venv,
    install,
    lowest_requirements,
    synthesize_consumer,
    twine_check,
)
from tests.synth import ROOT


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> Distributions:
    """Built from a copy of the sources, so the build leaves nothing in the work tree, into a
    relative folder as `make package-check` asks for (`--dist dist`)."""
    parent = tmp_path_factory.mktemp("package-check")
    cwd = Path.cwd()
    os.chdir(parent)
    try:
        built = build(Path("dist"))
    finally:
        os.chdir(cwd)
    assert built.sdist.parent == built.wheel.parent == parent / "dist"
    return built


def test_the_wheel_ships_handlers_and_layers_as_package_data_and_nothing_else(distributions):
    names = zipfile.ZipFile(distributions.wheel).namelist()
    for expected in (
        "opskit/__init__.py",
        "opskit/py.typed",
        "opskit/functions/notification/app.py",
        "opskit/functions/smoke_test/app.py",
        "opskit/layers/common/python/opskit_common/__init__.py",
        "opskit/layers/powertools/requirements.txt",
    ):
        assert expected in names
    assert not [n for n in names if n.startswith(("tests/", "stacks/", "constructs/", "scripts/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_sdist_holds_the_sources_the_wheel_was_built_from(distributions):
    with tarfile.open(distributions.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "NOTICE", "opskit/__init__.py"} <= names
    assert "opskit/functions/notification/app.py" in names
    wheel_modules = {
        n for n in zipfile.ZipFile(distributions.wheel).namelist() if n.startswith("opskit/")
    }
    assert wheel_modules <= names


def test_the_wheel_carries_the_licence_text_and_notice_it_declares(distributions):
    with zipfile.ZipFile(distributions.wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
        licences = {Path(n).name: archive.read(n).decode() for n in names if "/licenses/" in n}
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers and "License-File: NOTICE" in headers
    assert "Apache License" in licences["LICENSE"] and "Version 2.0" in licences["LICENSE"]
    assert "MIT-0" in licences["NOTICE"], "the Powertools layer's licence is named"


def test_twine_finds_both_distributions_fit_for_the_package_index(distributions):
    report = twine_check(distributions)
    passed = set(re.findall(r"^Checking \S*?([^/\s]+):\s*PASSED$", report, re.MULTILINE))
    assert passed == {distributions.sdist.name, distributions.wheel.name}, report


def test_the_version_is_written_once_and_every_distribution_and_the_changelog_agree(
    distributions,
):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert declared_version() == opskit.__version__
    assert check_versions(distributions) == opskit.__version__
    assert changelog_versions()[:2] == ["Unreleased", opskit.__version__]


def test_a_release_tag_that_names_another_version_is_refused(distributions):
    with pytest.raises(
        PackageCheckError, match=f"tag names 9.9.9, but opskit is {opskit.__version__}"
    ):
        check_versions(distributions, expected="9.9.9")


def copy_of_version_sources(root: Path) -> Path:
    for name in ("CHANGELOG.md", "opskit/__init__.py"):
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    return root


def test_a_version_bumped_after_the_build_is_refused(distributions, tmp_path):
    init = copy_of_version_sources(tmp_path) / "opskit" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{opskit.__version__}"', '"0.2.0"'))
    bumped = r"opskit\.__version__ is 0\.2\.0, but the sdist says"
    with pytest.raises(PackageCheckError, match=bumped):
        check_versions(distributions, root=tmp_path)


def test_a_version_without_a_changelog_section_is_refused(distributions, tmp_path):
    changelog = copy_of_version_sources(tmp_path) / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(f"## [{opskit.__version__}]", "## [0.0.9]"))
    with pytest.raises(PackageCheckError, match=r"CHANGELOG.md has no '## \[0.1.0\]' section"):
        check_versions(distributions, root=tmp_path)


def test_the_readmes_examples_synthesize_in_another_folder_with_the_installed_wheel(
    distributions, tmp_path
):
    venv = fresh_venv(tmp_path, offline=True)
    install(venv, distributions.wheel, offline=True)

    # CDK's validation of the same acknowledgements runs in every validated synth of the
    # suite; `make package-check` (CI, and --lowest) validates here too.
    consumer = synthesize_consumer(venv, tmp_path, validate=False)

    assert venv in consumer.imported_from.parents, "opskit came from the installed wheel"
    assert consumer.versions == (opskit.__version__, opskit.__version__)
    assert (consumer.outdir / "Operations.template.json").exists(), "the README's stack"


def wheel_requiring(folder: Path, *requirements: str) -> Path:
    wheel = folder / "example-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        lines = [f"Requires-Dist: {r}" for r in requirements]
        archive.writestr("example-1.0.dist-info/METADATA", "\n".join(["Name: example", *lines, ""]))
    return wheel


def test_lowest_pins_each_dependency_to_its_floor_and_leaves_extras_and_other_pythons_out(
    tmp_path,
):
    wheel = wheel_requiring(
        tmp_path,
        "aws-cdk-lib<3,>=2.269.0",
        "constructs<11,>=10.5.0",
        "tomli>=2; python_version < '3.11'",
        "moto[server]<6,>=5; extra == 'dev'",
    )
    assert lowest_requirements(wheel) == ["aws-cdk-lib==2.269.0", "constructs==10.5.0"]


def test_lowest_refuses_a_dependency_without_a_lower_bound(tmp_path):
    wheel = wheel_requiring(tmp_path, "aws-cdk-lib<3")
    with pytest.raises(PackageCheckError, match=r"'aws-cdk-lib<3' declares no lower bound"):
        lowest_requirements(wheel)


def test_lowest_pins_exactly_the_floors_pyproject_declares(distributions):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = lowest_requirements(distributions.wheel)
    assert len(pins) == len(declared)
    assert "aws-cdk-lib==2.269.0" in pins, "the floor the README and CHANGELOG name"


def test_make_package_check_exits_1_with_one_line_when_the_installed_versions_disagree(
    tmp_path, monkeypatch, capsys
):
    """The command's own flow, each stage stood in for (the tests above run them for real)."""
    dist = tmp_path / "dist"
    built = Distributions(sdist=dist / "cdk_opskit-1.2.3.tar.gz", wheel=dist / "w.whl")
    monkeypatch.setattr(package_check, "build", lambda folder: built)
    monkeypatch.setattr(package_check, "twine_check", lambda found: "Checking w.whl: PASSED")
    monkeypatch.setattr(package_check, "check_versions", lambda found, expected: "1.2.3")
    monkeypatch.setattr(package_check, "fresh_venv", lambda scratch, offline: scratch / "venv")
    installed = []
    monkeypatch.setattr(
        package_check,
        "install",
        lambda venv, wheel, offline, requirements: installed.append(requirements),
    )
    monkeypatch.setattr(package_check, "lowest_requirements", lambda wheel: ["cdk==1.0"])

    def consumer_reporting(declared: str, installed: str) -> None:
        consumer = Consumer((declared, installed), imported_from=tmp_path, outdir=tmp_path)
        monkeypatch.setattr(package_check, "synthesize_consumer", lambda venv, scratch: consumer)

    consumer_reporting("1.2.3", "1.2.2")
    assert package_check.main(["--dist", str(dist)]) == 1
    assert capsys.readouterr().err == (
        "package-check: the installed wheel reports versions ('1.2.3', '1.2.2')\n"
    )
    consumer_reporting("1.2.3", "1.2.3")
    assert package_check.main(["--dist", str(dist)]) == 0
    output = capsys.readouterr().out
    assert "version    1.2.3: opskit.__version__, sdist, wheel and CHANGELOG.md agree" in output
    assert output.endswith(
        "consumer   the README's examples synthesized in a fresh venv with opskit 1.2.3 "
        "from the wheel\n"
    )
    assert package_check.main(["--dist", str(dist), "--lowest"]) == 0
    assert capsys.readouterr().out.endswith("from the wheel, cdk==1.0\n")
    assert installed == [[], [], ["cdk==1.0"]]
