"""`tlexport export`: artifacts, metadata, logits vs torchvision, variants, manifest, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.cli import cli

# Every format but OpenVINO IR (tests/test_openvino.py exports that): the file list below is exact.
FULL_ARGS = ["--format", "onnx,torchscript,pt2", "--precision", "fp32", "--precision", "fp16", "--precision", "int8",
             "--bake-preprocess", "--calib-size", "16"]


def full_export(fake_run: Path, tmp_path_factory) -> Path:
    """One full export through the CLI, shared by test_export/test_runtimes/test_predict (cached in
    the session's base temp folder)."""
    out = tmp_path_factory.getbasetemp() / "full_export"
    if not (out / "manifest.json").is_file():
        r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--json", *FULL_ARGS])
        assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def exported(fake_run, tmp_path_factory) -> Path:
    return full_export(fake_run, tmp_path_factory)


def _torchvision_logits(fake_run: Path, x: np.ndarray) -> np.ndarray:
    """The trained weights in a plain torchvision model, independent of tlexport's loader."""
    import torch
    import torchvision
    from safetensors.torch import load_file

    model = torchvision.models.resnet18(num_classes=3)
    model.load_state_dict(load_file(str(fake_run / "best.safetensors")))
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).numpy()


def _batch(n: int, crop: int = 48, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, crop, crop)).astype(np.float32)


def test_export_writes_every_artifact_and_a_manifest(exported, fake_run):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["manifest.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx", "model.pt2",
                     "model.ts", "model.uint8.onnx"]  # no .data side file, no staging left over
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["run"]["classes"] == ["circle", "square", "triangle"]
    assert manifest["run"]["preprocess"]["crop"] == 48
    assert manifest["batch"] == "dynamic" and manifest["verification"]["passed"] is True
    from tlexport.fileio import sha256

    for a in manifest["artifacts"]:
        path = exported / a["file"]
        assert a["size"] == path.stat().st_size and a["sha256"] == sha256(path)
        assert a["verified"] is True and a["inputs"] and a["outputs"]
    onnx_art = next(a for a in manifest["artifacts"] if a["file"] == "model.onnx")
    assert onnx_art["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 48, 48]}]
    assert onnx_art["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}]
    assert any("torchscript fp16" in s for s in manifest["skipped"])


def test_onnx_file_alone_matches_torchvision_at_batch_1_and_3(exported, fake_run, tmp_path):
    import onnx
    import onnxruntime as ort

    from tlexport.formats.onnx.graph import DEFAULT_OPSET

    alone = tmp_path / "elsewhere.onnx"
    shutil.copy(exported / "model.onnx", alone)
    session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = _batch(n)
        got = session.run(["logits"], {"image": x})[0]
        assert got.shape == (n, 3)
        assert np.abs(got - _torchvision_logits(fake_run, x)).max() < 1e-3
    proto = onnx.load(str(alone))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["tlexport.classes"]) == ["circle", "square", "triangle"]
    pre = json.loads(props["tlexport.preprocess"])
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert pre["color_order"] == "RGB" and pre["layout"] == "NCHW"
    assert props["tlexport.arch"] == "resnet18" and len(props["tlexport.weights_sha256"]) == 64
    ops = {n.op_type for n in proto.graph.node}
    assert "Dropout" not in ops and "BatchNormalization" not in ops  # BN folded in eval mode
    # The default loads in onnxruntime 1.17 (IR 9 at most, opset 20 at most) and older: opset 18, IR 8.
    assert proto.opset_import[0].version == DEFAULT_OPSET == 18 and proto.ir_version == 8


def test_torchscript_and_pt2_carry_metadata_and_logits(exported, fake_run):
    import torch

    from tlexport.formats.metadata import read_metadata

    extra = {"tlexport.json": ""}
    ts = torch.jit.load(str(exported / "model.ts"), _extra_files=extra)
    assert json.loads(extra["tlexport.json"])["classes"] == ["circle", "square", "triangle"]
    pt2 = torch.export.load(str(exported / "model.pt2")).module()
    for n in (1, 3):
        x = _batch(n, seed=n)
        want = _torchvision_logits(fake_run, x)
        with torch.inference_mode():
            assert np.abs(ts(torch.from_numpy(x)).numpy() - want).max() < 1e-3
            assert np.abs(pt2(torch.from_numpy(x)).numpy() - want).max() < 1e-3
    for name in ("model.ts", "model.pt2", "model.onnx", "model.int8.onnx"):
        meta = read_metadata(exported / name)
        assert meta["preprocess"]["crop"] == 48 and meta["arch"] == "resnet18", name


def test_fp16_and_int8_variants(exported):
    import onnx

    fp32, int8 = (exported / "model.onnx").stat().st_size, (exported / "model.int8.onnx").stat().st_size
    assert int8 < fp32 / 3.5
    half = onnx.load(str(exported / "model.fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    big = [t for t in half.graph.initializer if len(t.dims) == 4]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    q = onnx.load(str(exported / "model.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in q.graph.node}
    manifest = json.loads((exported / "manifest.json").read_text())
    (art,) = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert art["verification"]["top1_agreement"] >= 0.98 and "16 images" in art["notes"][0]


def test_in_graph_model_takes_any_decoded_image_and_matches_tlexport_preprocessing(exported, tiny_data):
    import onnxruntime as ort
    from PIL import Image

    from tlexport.data.images import load_rgb
    from tlexport.data.preprocess import Preprocess
    from tlexport.formats.metadata import read_metadata

    meta = read_metadata(exported / "model.uint8.onnx")
    assert meta["in_graph_preprocess"] is True and meta["classes"] == ["circle", "square", "triangle"]
    pre = Preprocess.from_dict(meta["preprocess"])
    baked = ort.InferenceSession(str(exported / "model.uint8.onnx"), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = baked.get_inputs()
    assert inp.name == "image" and inp.type == "tensor(uint8)" and inp.shape == ["height", "width", 3]
    assert [(o.name, o.shape) for o in baked.get_outputs()] == [("logits", [1, 3]), ("probabilities", [1, 3])]
    first = load_rgb(sorted((tiny_data / "val").rglob("*.png"))[0])
    for w, h in ((48, 48), (37, 101), (120, 40), (20, 30)):  # tall, wide, smaller than the crop
        img = first.resize((w, h), Image.BICUBIC)
        logits, probs = baked.run(None, {"image": np.asarray(img)})
        ref = plain.run(None, {"image": pre.to_array(img)[None]})[0]
        assert logits.argmax() == ref.argmax() and np.abs(logits - ref).max() < 2e-3, (w, h)
        assert np.allclose(probs, np.exp(logits) / np.exp(logits).sum(), atol=1e-6)
    art = next(a for a in json.loads((exported / "manifest.json").read_text())["artifacts"]
               if a["file"] == "model.uint8.onnx")
    assert art["role"] == "baked-preprocess" and art["verified"] is True
    v = art["verification"]
    assert v["top1_agreement"] == 1.0 and v["pixel_max_levels"] <= 1 and v["max_abs"] <= v["tolerance"]
    assert "3000x2000" in v["inputs"] and "20x30" in v["inputs"]


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def _one_line_error(r, code, text):
    assert r.exit_code == code, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and text in r.output and "Traceback" not in r.output, r.output


def test_bad_input_gets_one_line_errors(fake_run, tmp_path):
    _one_line_error(_invoke(tmp_path / "missing"), 2, "does not exist")
    _one_line_error(_invoke(fake_run, "--format", "onnx2"), 2, "onnx2")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _one_line_error(_invoke(fake_run, "--out", a_file), 2, "is a file")
    _one_line_error(_invoke(fake_run, "--opset", "9", "--out", tmp_path / "o"), 2, "--opset 9")
    _one_line_error(_invoke(fake_run, "--batch", "zero", "--out", tmp_path / "o"), 2, "--batch")
    import torch

    if not torch.cuda.is_available():
        _one_line_error(_invoke(fake_run, "--device", "cuda", "--out", tmp_path / "o"), 1, "no CUDA")


def test_truncated_weights_fail_and_write_nothing(fake_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    data = (run / "best.safetensors").read_bytes()
    (run / "best.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(_invoke(run), 1, "best.safetensors")
    assert not (run / "export").exists()


def test_failed_int8_keeps_the_fp32_and_leaves_no_partial_int8(fake_run, tmp_path):
    """No calibration images: a clear error for int8, exit 1; the fp32 ONNX that was made is
    published with its manifest (which lists the int8 failure), the user's file stays."""
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    (run / "split.json").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    r = _invoke(run, "--precision", "fp32", "--precision", "int8", "--out", out, "--no-verify")
    _one_line_error(r, 1, "calibration images")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json", "model.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.onnx"]
    (failed,) = manifest["failed"]
    assert failed["file"] == "model.int8.onnx" and "calibration images" in failed["reason"]


def test_fixed_batch(fake_run, tmp_path):
    import onnx

    out = tmp_path / "fixed"
    r = _invoke(fake_run, "--batch", "2", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    shape = [d.dim_value for d in onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert shape == [2, 3, 48, 48]
    result = json.loads(r.stdout)
    assert [a["file"] for a in result["artifacts"]] == ["model.onnx"]
    assert result["artifacts"][0]["verification"]["passed"] is True


def test_calibration_images_from_folder_or_train_split(fake_run, tiny_data):
    from tlexport.errors import ExportError
    from tlexport.exporters.int8 import calibration_batches, calibration_images
    from tlexport.models import load_run

    run = load_run(fake_run)
    files = calibration_images(run, tiny_data / "val", 5)
    assert len(files) == 5 and all(str(f).startswith(str(tiny_data / "val")) for f in files)
    assert calibration_images(run, tiny_data / "val", 5) == files  # reproducible subset
    assert len(calibration_images(run, None, 1000)) == len(run.samples("train"))
    batches = calibration_batches(files, run.preprocess, 4, pad=True)  # padding is for fixed-batch graphs now
    assert [b.shape for b in batches] == [(4, 3, 48, 48), (4, 3, 48, 48)]
    np.testing.assert_array_equal(batches[1][0], batches[1][3])  # last batch padded by repetition
    empty = tiny_data.parent / "empty_calib"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ExportError, match="calibration images"):
        calibration_images(run, empty, 5)


def test_torchscript_rejects_a_trace_that_bakes_in_the_batch(tmp_path):
    import torch

    from tlexport.errors import ExportError
    from tlexport.formats.torchscript.build import export_torchscript

    class BatchLoop(torch.nn.Module):
        def forward(self, x):  # len() of a traced tensor: the loop is unrolled for batch 2
            return torch.stack([x[i].mean((1, 2)) for i in range(len(x))])

    class PythonInt(torch.nn.Module):
        def forward(self, x):  # int() of a traced shape: a TracerWarning, made an error
            return x.mean((2, 3)) * int(x.sum() > 0)

    x = torch.randn(2, 3, 8, 8)
    for module in (BatchLoop(), PythonInt()):
        with pytest.raises(ExportError, match="TorchScript tracing failed"):
            export_torchscript(module.eval(), x, tmp_path / "m.ts", dynamic=True, meta={})
    assert not (tmp_path / "m.ts").exists()


def test_the_export_table_says_why_an_artifact_could_not_be_verified(tmp_path):
    """An artifact no runtime here can run carries a reason and no error numbers: the table shows
    the reason (it raised KeyError 'max_abs')."""
    from rich.console import Console

    from tlexport.exporters.job import Artifact
    from tlexport.exporters.pipeline import ExportResult
    from tlexport.render import export_table

    why = "not verified: gpu-rt cannot run here (no GPU)"
    checked = Artifact("model.onnx", "onnx", "fp32", size=10, verified=True,
                       verification={"passed": True, "max_abs": 2e-6, "top1_agreement": 1.0})
    unchecked = Artifact("model.fp16.onnx", "onnx", "fp16", size=5, verification={"passed": None, "reason": why})
    con = Console(record=True, width=200)
    export_table(con, ExportResult(tmp_path, [checked, unchecked], seconds=1.0))
    text = con.export_text()
    assert "2.0e-06" in text and "100%" in text and f"model.fp16.onnx: {why}" in text
