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
    before = sorted(p.name for p in out.iterdir())
    # exporting again adds: the IR and its weights stay (#26.2)
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(set(before) | {"model.onnx"})
    # --replace removes what this export does not make, the IR's .bin weights with their .xml
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--no-verify", "--replace"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert "model.xml" in r.output and "model.int8.xml" in r.output, r.output  # each removal is named


def _int8_layers(xml: Path) -> dict[str, bool]:
    """Convolution / MatMul (by the ONNX node name it came from) -> whether its weights are int8
    constants (NNCF stores a quantized layer's weights as i8 and dequantizes them in the graph)."""
    import openvino as ov

    def int8_weights(node, depth=0):
        if node.get_type_name() == "Constant":
            return node.get_output_element_type(0).get_type_name() in ("i8", "u8")
        return depth < 4 and any(int8_weights(v.get_node(), depth + 1) for v in node.input_values())

    return {op.get_friendly_name().removesuffix("/WithoutBiases"): int8_weights(op.input_value(1).get_node())
            for op in ov.Core().read_model(str(xml)).get_ordered_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")}


def test_int8_ir_is_nncf_quantized_where_nncf_is_installed(ir_export):
    pytest.importorskip("nncf")
    manifest = json.loads((ir_export / "manifest.json").read_text())
    rec = next(a for a in manifest["artifacts"] if a["file"] == "model.int8.xml")["int8"]
    assert rec["quantizer"].startswith("NNCF") and rec["gate_runtimes"] == ["openvino"]
    assert rec["calibration"] == {"method": "NNCF MINMAX", "images": 10, "source": "run train split",
                                  "tried": ["minmax"]}
    layers = _int8_layers(ir_export / "model.int8.xml")
    assert len(layers) == 21 and all(layers.values())  # every layer int8 (auto: the gate passed)
    assert (rec["quantized"], rec["total"]) == (21, 21) and rec["size_ratio"] < 0.3  # the record counts the same


def test_nncf_keeps_the_named_layers_float_and_percentile_converts_the_onnx_file(fake_run, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "stem"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "openvino", "--precision", "int8",
                                 "--int8-fallback", "stem,head", "--calib-size", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    stem, head = art["int8"]["float_nodes"]
    layers = _int8_layers(out / "model.int8.xml")
    assert {name for name, int8 in layers.items() if not int8} == {stem, head} and len(layers) == 21
    out = tmp_path / "percentile"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "openvino", "--precision", "int8",
                                 "--calib-method", "percentile", "--calib-size", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert "converted from the QDQ int8 ONNX" in art["notes"][0] and "quantizer" not in art["int8"]
    assert art["int8"]["calibration"]["method"] == "percentile"
