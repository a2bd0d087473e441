"""Every path a command hands a converter or a subprocess is absolute: export from another
working folder with RUN, --out and --calib-data relative to it (as README writes every command).
pnnx runs in its own folder, so ncnn failed on the user's relative paths (#26.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from tlexport.cli import cli

HERE = Path(__file__).resolve().parent


def in_a_fresh_folder(fake_run, tiny_data, tmp_path, monkeypatch) -> None:
    """tmp_path as the working folder, holding runs/r (a copy of the run) and calib/ (images)."""
    shutil.copytree(fake_run, tmp_path / "runs" / "r")
    shutil.copytree(tiny_data / "train", tmp_path / "calib")
    monkeypatch.chdir(tmp_path)


def export_relative(*args):
    r = CliRunner().invoke(cli, ["export", "runs/r", "--out", "runs/r/exp", "--calib-data", "calib",
                                 "--calib-size", "8", *args])
    assert r.exit_code == 0, r.output
    return json.loads(Path("runs/r/exp/manifest.json").read_text())


def check_published(manifest: dict, formats) -> None:
    """Every format asked for is there, on disk, and verified (or says why nothing here runs it)."""
    assert {a["format"] for a in manifest["artifacts"]} == set(formats)
    for a in manifest["artifacts"]:
        assert Path("runs/r/exp", a["file"]).exists(), a["file"]
        v = a["verification"] or {}
        assert a["verified"] is True or (a["verified"] is None and "cannot run here" in (v.get("reason") or "")), a


def test_a_relative_data_folder_is_recorded_absolute(tiny_data, tmp_path, monkeypatch):
    """split.json's root names the data from any folder a later command runs in."""
    from tlexport.data.folders import scan

    monkeypatch.chdir(tiny_data.parent)
    record = scan(tiny_data.name).split_record()
    assert Path(record["root"]).is_absolute() and Path(record["root"]) == tiny_data


def test_every_installed_format_exports_from_another_folder(fake_run, tiny_data, tmp_path, monkeypatch):
    """Every format that can be exported here, fp32 and int8, with relative paths: ONNX and the
    edge formats in the shared edge export (conftest.py, made the same way from another folder,
    test_edge.py checks it), every other one here. ncnn's converter runs in a folder of its own, so
    this is where relative paths broke. The web page finds onnxruntime-web through
    TLEXPORT_ORT_WEB (the tests' node_modules)."""
    from conftest import EDGE_FORMATS
    from test_edge import needs_edge

    from tlexport.exporters.pipeline import expand_all

    if (HERE / "browser" / "node_modules" / "onnxruntime-web").is_dir():
        monkeypatch.setenv("TLEXPORT_ORT_WEB", str(HERE / "browser"))
    shared = () if needs_edge.args[0] else EDGE_FORMATS  # without the edge extra, no shared export ran
    formats = [f for f in expand_all(("all",))[0] if f not in shared]
    assert "onnx" in EDGE_FORMATS and formats  # ONNX (and model.int8.onnx, verified) is test_edge.py's
    in_a_fresh_folder(fake_run, tiny_data, tmp_path, monkeypatch)
    manifest = export_relative("--format", ",".join(formats), "--precision", "fp32,int8")
    check_published(manifest, formats)
