"""OpenVINO IR export: two files per artifact, metadata in rt_info, parity, torch-free predict,
and the companion file published and cleaned up with its graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import predict_in_fresh_process

from tlexport.cli import cli

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ir_export(fake_run, tmp_path_factory) -> Path:
    """fp32 + int8 IR only (the ONNX it is converted from is made privately), verified."""
    out = tmp_path_factory.mktemp("ov") / "export"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "openvino", "--precision", "fp32,int8",
                                 "--out", str(out), "--calib-size", "10"])
    assert r.exit_code == 0, r.output
    return out


def test_ir_files_manifest_and_metadata(ir_export, fake_run):
    from tlexport.fileio import sha256
    from tlexport.formats.metadata import read_metadata

    names = sorted(p.name for p in ir_export.iterdir())
    assert names == ["manifest.json", "model.bin", "model.int8.bin", "model.int8.xml", "model.xml"]
    manifest = json.loads((ir_export / "manifest.json").read_text())
    arts = {a["file"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"model.xml", "model.int8.xml"}
    for a in arts.values():
        (comp,) = a["companions"]
        assert comp["file"] == a["file"].replace(".xml", ".bin")
        assert comp["sha256"] == sha256(ir_export / comp["file"]) and comp["size"] > a["size"]
        assert a["verified"] is True and a["format"] == "openvino" and a["devices"] == ["cpu"]
    assert arts["model.int8.xml"]["int8"]["images_source"] == "the run's val split"
    # int8 weights: the IR's weights file is about a quarter of fp32's.
    assert (ir_export / "model.int8.bin").stat().st_size < (ir_export / "model.bin").stat().st_size / 3
    run = json.loads((fake_run / "run.json").read_text())
    for xml in ("model.xml", "model.int8.xml"):
        meta = read_metadata(ir_export / xml)
        assert meta["classes"] == run["classes"] and meta["preprocess"]["crop"] == 48
        assert meta["batch"] == "dynamic"


def test_parity_runs_the_ir(ir_export, tmp_path):
    out = tmp_path / "parity.json"
    r = CliRunner().invoke(cli, ["parity", str(ir_export), "--runtimes", "openvino", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    rows = [x for x in data["results"] if x["runtime"] == "openvino"]
    assert {(Path(x["artifact"]).name, x["precision"]) for x in rows} == {("model.xml", "fp32"), ("model.int8.xml", "int8")}
    assert all(x["passed"] for x in rows)


def test_predict_on_ir_imports_no_torch(ir_export, tiny_data):
    got = predict_in_fresh_process(ir_export / "model.int8.xml", tiny_data / "val", top_k=2)
    assert got["torch"] is False and got["n"] == 12
    assert got["top"][0]["label"] in ("circle", "square", "triangle")


def test_missing_weights_file_is_a_clear_error(ir_export, tmp_path):
    from tlexport.errors import RuntimeUnavailable
    from tlexport.formats.openvino.runtime import OpenVINORuntime

    lone = tmp_path / "model.xml"
    lone.write_bytes((ir_export / "model.xml").read_bytes())
    with pytest.raises(RuntimeUnavailable, match="model.bin are missing"):
        OpenVINORuntime(lone, "fp32").load()


def test_reexport_removes_the_ir_and_its_weights(ir_export, fake_run, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(ir_export, out)
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
