"""The pipeline's templates without whitespace (scripts/compact_templates.py), so that its
Prepare actions, which refuse templates over 512 KB, take every environment's (that each
does is specified with the environments, in tests/test_environments.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from scripts import compact_templates
from scripts.compact_templates import main
from tests.synth import GOLDEN, ROOT


def assembly_of(tmp_path: Path, *names: str) -> Path:
    """A cloud assembly holding the committed environments' templates, indented as the CDK
    writes them, one in a nested stage assembly as a pipeline has them."""
    assembly = tmp_path / "cdk.out"
    for index, name in enumerate(names):
        folder = assembly / f"assembly-OpsKitPipeline-{name}" if index else assembly
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(GOLDEN / f"{name}.template.json", folder / f"OpsKit{name}.template.json")
    return assembly


def test_every_template_loses_its_whitespace_and_nothing_else(tmp_path, capsys):
    assembly = assembly_of(tmp_path, "dev", "prod")
    templates = sorted(assembly.rglob("*.template.json"))
    before = {t: (t.stat().st_size, json.loads(t.read_text())) for t in templates}

    assert main([str(assembly)]) == 0

    for template, (size, document) in before.items():
        text = template.read_text()
        assert json.loads(text) == document
        assert text == json.dumps(document, separators=(",", ":"))
        assert template.stat().st_size < size * 0.8
    assert "2 templates, the largest" in capsys.readouterr().out


def test_files_inside_assets_and_non_ascii_text_are_left_as_they_are(tmp_path):
    """An asset is uploaded under the hash of its contents; the Prepare action has refused
    raw UTF-8 that CloudFormation itself accepts."""
    assembly = assembly_of(tmp_path, "dev")
    [template] = assembly.glob("*.template.json")
    document = json.loads(template.read_text())
    document["Description"] = "opskit — dév"
    template.write_text(json.dumps(document, indent=1, ensure_ascii=False))
    asset = assembly / "asset.0123abcd" / "sample.template.json"
    asset.parent.mkdir()
    asset.write_text('{\n "kept": "as it is"\n}')

    assert main([str(assembly)]) == 0

    assert template.read_bytes().isascii() and "\\u2014 d\\u00e9v" in template.read_text()
    assert json.loads(template.read_text())["Description"] == "opskit — dév"
    assert asset.read_text() == '{\n "kept": "as it is"\n}'


def test_a_template_too_big_even_compacted_stops_the_synth_in_one_line(
    tmp_path, capsys, monkeypatch
):
    assembly = assembly_of(tmp_path, "dev")
    monkeypatch.setattr(compact_templates, "PREPARE_LIMIT_BYTES", 1000)

    assert main([str(assembly)]) == 1

    error = capsys.readouterr().err
    assert "OpsKitdev.template.json is" in error and "over the 1 KB" in error
    assert error.count("\n") == 1


def test_an_assembly_without_templates_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no templates under" in capsys.readouterr().err


def test_make_synth_compacts_the_pipelines_assembly_only():
    def dry_run(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", "synth", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    assert "scripts/compact_templates.py cdk.out" in dry_run("PIPELINE=1")
    assert "compact_templates" not in dry_run("ENV=prod")
