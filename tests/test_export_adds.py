"""Exporting again adds: a second `tlexport export` into a folder keeps the earlier files and
merges the manifest; a file made again replaces its entry and says so; `--replace` removes the
rest and says which; another model's export is refused; "fastest" stays one measurement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_fake_run

from tlexport.cli import cli
from tlexport.exporters import speed


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def said(r) -> str:
    return " ".join(r.output.split())  # Rich wraps long lines at the runner's 80 columns


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def entries(out: Path) -> dict:
    files = [a["file"] for a in manifest(out)["artifacts"]]
    assert len(files) == len(set(files)), files  # one entry per file, never a duplicate
    return {a["file"]: a for a in manifest(out)["artifacts"]}


@pytest.fixture(scope="module")
def onnx_export(fake_run, tmp_path_factory) -> Path:
    """One fp32 ONNX export; each test adds to a copy of it."""
    out = tmp_path_factory.mktemp("adds") / "export"
    r = invoke("export", fake_run, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def copy_of(onnx_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(onnx_export, tmp_path / "export"))


def test_a_second_export_adds_and_a_format_exported_again_replaces_its_own_files(fake_run, onnx_export, tmp_path):
    out = copy_of(onnx_export, tmp_path)
    first = entries(out)["model.onnx"]

    r = invoke("export", fake_run, "--format", "torchscript", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "model.onnx").is_file() and (out / "model.ts").is_file()
    both = entries(out)
    assert set(both) == {"model.onnx", "model.ts"}
    assert both["model.onnx"]["verification"] == first["verification"] and both["model.onnx"]["verified"] is True
    assert both["model.onnx"]["sha256"] == first["sha256"]  # kept, not rebuilt
    assert "kept 1 file(s) of earlier exports: model.onnx" in said(r)
    assert [h["files"] for h in manifest(out)["exports"]] == [["model.onnx"], ["model.ts"]]

    ts_before = both["model.ts"]
    r = invoke("export", fake_run, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert "note: replaced model.onnx (exported again)" in said(r)
    again = entries(out)
    assert set(again) == {"model.onnx", "model.ts"} and again["model.ts"] == ts_before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.ts"]  # no staging left


def test_kept_files_are_timed_with_the_new_ones_and_replace_removes_them(fake_run, onnx_export, tmp_path,
                                                                           monkeypatch):
    """The .ort added later is timed beside the kept model.onnx, in one measurement; then
    --replace removes what the next export does not make, and says which files."""
    out = copy_of(onnx_export, tmp_path)
    calls = []

    def time_files(runtime, files, crop):
        calls.append((runtime, [p for p, _ in files]))
        return {"ms": [2.0 if p.name == "model.onnx" else 3.0 for p, _ in files], "rounds": 3, "competing_load": 0.0}

    monkeypatch.setattr(speed, "time_files", time_files)
    r = invoke("export", fake_run, "--format", "ort", "--out", out)
    assert r.exit_code == 0, r.output
    (paths,) = [p for rt, p in calls if rt == "onnxruntime"]
    assert sorted(p.name for p in paths) == ["model.onnx", "model.ort"]
    assert out / "model.onnx" in paths  # the kept file, where it was published
    m = manifest(out)
    assert m["fastest"]["onnxruntime"] == "model.onnx"
    speeds = {a["file"]: a["speed"]["onnxruntime"]["p50_ms"] for a in m["artifacts"]}
    assert speeds == {"model.onnx": 2.0, "model.ort": 3.0}

    monkeypatch.undo()
    (out / "notes.txt").write_text("mine")  # not tlexport's: never touched
    r = invoke("export", fake_run, "--format", "torchscript", "--out", out, "--replace")
    assert r.exit_code == 0, r.output
    assert "note: removed (--replace): model.onnx, model.ort, model.required_operators.config" in said(r)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.ts", "notes.txt"]
    assert set(entries(out)) == {"model.ts"}


def test_an_export_of_other_weights_is_refused_and_leaves_the_folder_as_it_was(onnx_export, tiny_data, tmp_path):
    out = copy_of(onnx_export, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = write_fake_run(tmp_path / "other", tiny_data, ["circle", "square", "triangle"], seed=1)
    r = invoke("export", other, "--format", "torchscript", "--out", out)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and "holds an export of other weights" in line and "--replace" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = invoke("export", other, "--format", "torchscript", "--out", out, "--replace")
    assert r.exit_code == 0 and "removed (--replace): model.onnx" in said(r), r.output
    shutil.rmtree(tmp_path / "other")
