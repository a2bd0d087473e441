"""Edge and serving formats: ExecuTorch (.pte), LiteRT (.tflite), ONNX Runtime mobile (.ort) and a
Triton model repository, exported once from the tiny fake run and checked against PyTorch with the
run's real val images. Skipped without the `edge` extra (CI installs it: see .ci/run)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import EDGE_CALIB
from tlexport.cli import cli

EDGE_MODULES = ("executorch", "litert_torch", "ai_edge_litert", "tritonclient", "torchao")
needs_edge = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in EDGE_MODULES),
    reason="the edge extra is not installed (pip install -e '.[edge]' && pip install --no-deps executorch==1.5.1)")
CLASSES = ["circle", "square", "triangle"]
MODEL_FILES = {  # file -> (format, precision, runtime that parity runs it with)
    "model.onnx": ("onnx", "fp32", "onnxruntime"), "model.int8.onnx": ("onnx", "int8", "onnxruntime"),
    "model.pte": ("executorch", "fp32", "executorch"), "model.int8.pte": ("executorch", "int8", "executorch"),
    "model.tflite": ("tflite", "fp32", "litert"), "model.int8.tflite": ("tflite", "int8", "litert"),
    "model.ort": ("ort", "fp32", "onnxruntime"), "model.int8.ort": ("ort", "int8", "onnxruntime"),
    "model_repository/classifier/1/model.onnx": ("triton", "fp32", "onnxruntime"),
    "model_repository/classifier_int8/1/model.onnx": ("triton", "int8", "onnxruntime"),
}


@pytest.fixture(scope="session")
def edge_export(edge_export_run) -> Path:
    """The shared export of every edge format (conftest.py): its folder."""
    return edge_export_run.folder


@needs_edge
def test_every_edge_artifact_is_listed_verified_and_on_disk(edge_export):
    from tlexport.fileio import sha256

    manifest = json.loads((edge_export / "manifest.json").read_text())
    arts = {a["file"]: a for a in manifest["artifacts"]}
    assert set(arts) == set(MODEL_FILES)
    for name, (fmt, precision, _) in MODEL_FILES.items():
        a = arts[name]
        assert (a["format"], a["precision"]) == (fmt, precision)
        assert a["verified"] is True and a["verification"]["top1_agreement"] == 1.0, a
        if precision == "int8":  # an odd count: LiteRT's batch-2 conversion gets a short last batch
            assert a["int8"]["calibration"]["images"] == EDGE_CALIB, a
        if precision == "fp32":
            assert a["verification"]["max_abs"] < 1e-4
        for f in [a, *a["companions"]]:  # side files are listed with their checksums too
            assert sha256(edge_export / f["file"]) == f["sha256"]
    assert {e["file"] for e in arts["model.ort"]["companions"]} == {"model.required_operators.config"}
    assert "Conv" in (edge_export / "model.required_operators.config").read_text()
    # int8 files are several times smaller than their fp32 twins
    for fp32, int8 in (("model.pte", "model.int8.pte"), ("model.tflite", "model.int8.tflite")):
        assert arts[int8]["size"] < arts[fp32]["size"] / 3
    assert not list(edge_export.glob(".tlexport-staging*"))


@needs_edge
def test_parity_runs_each_edge_file_with_its_own_runtime(edge_export, tmp_path):
    r = CliRunner().invoke(cli, ["parity", str(edge_export), "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] and report["source"] == "the run's val split" and report["images"] == 12
    ran = {(Path(x["artifact"]).relative_to(edge_export).as_posix(), x["runtime"])
           for x in report["results"] if x.get("skipped_reason") is None and x.get("artifact")}
    assert {(f, rt) for f, (_, _, rt) in MODEL_FILES.items()} <= ran


@needs_edge
def test_each_file_carries_the_run_classes_and_preprocessing(edge_export, fake_run):
    from tlexport.formats.metadata import read_metadata

    run = json.loads((fake_run / "run.json").read_text())
    for name in MODEL_FILES:
        meta = read_metadata(edge_export / name)
        assert meta["classes"] == CLASSES and meta["preprocess"] == run["preprocess"], name
        assert meta["arch"] == "resnet18"


@needs_edge
def test_triton_config_parses_with_tritons_protobuf_and_matches_the_onnx(edge_export):
    import onnx
    from google.protobuf import text_format

    from tlexport.formats.triton.build import check_config, model_config_pb2

    mc = model_config_pb2()
    for name in ("classifier", "classifier_int8"):
        folder = edge_export / "model_repository" / name
        cfg = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        graph = onnx.load(str(folder / "1" / "model.onnx")).graph
        assert (cfg.name, cfg.platform, cfg.max_batch_size) == (name, "onnxruntime_onnx", 64)
        assert [i.name for i in cfg.input] == [i.name for i in graph.input] == ["image"]
        assert [o.name for o in cfg.output] == [o.name for o in graph.output] == ["logits"]
        assert list(cfg.input[0].dims) == [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:]
        assert list(cfg.output[0].dims) == [3] and cfg.input[0].data_type == mc.TYPE_FP32
        assert cfg.HasField("dynamic_batching")
        assert (folder / cfg.output[0].label_filename).read_text().splitlines() == CLASSES
        gpu = text_format.Parse((folder / "configs" / "gpu.pbtxt").read_text(), mc.ModelConfig())
        kinds = {mc.ModelInstanceGroup.Kind.Name(g.kind) for c in (cfg, gpu) for g in c.instance_group}
        assert kinds == {"KIND_CPU", "KIND_GPU"}
        check_config(folder / "config.pbtxt", folder / "1" / "model.onnx")


@needs_edge
def test_triton_check_rejects_a_config_that_disagrees_with_the_model(edge_export, tmp_path):
    from tlexport.errors import ExportError
    from tlexport.formats.triton.build import check_config

    folder = edge_export / "model_repository" / "classifier"
    bad = tmp_path / "classifier" / "config.pbtxt"
    bad.parent.mkdir()
    bad.write_text((folder / "config.pbtxt").read_text().replace("dims: 48", "dims: 64", 1))
    with pytest.raises(ExportError, match="input does not match"):
        check_config(bad, folder / "1" / "model.onnx")
    bad.write_text('name: "classifier" bogus_field: 1')
    with pytest.raises(ExportError, match="does not parse"):
        check_config(bad, folder / "1" / "model.onnx")


@needs_edge
def test_predict_and_the_examples_agree_on_edge_files(edge_export, tiny_data):
    from tlexport.inference import predict

    images = tiny_data / "val" / "square"
    root = Path(__file__).resolve().parents[1]
    for model, script in (("model.pte", "edge_executorch.py"), ("model.int8.tflite", "edge_litert.py")):
        expected = {Path(r["image"]).name: r["top"][0]["label"] for r in predict(edge_export / model, [images]).results}
        assert len(expected) == 4
        p = subprocess.run([sys.executable, str(root / "examples" / script), str(edge_export / model), str(images)],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        printed = {Path(line.split(":")[0]).name: line.split(": ")[1].split()[0] for line in p.stdout.splitlines()}
        assert printed == expected, (script, p.stdout)


@needs_edge
def test_litert_runtime_feeds_nhwc_files_any_batch(tmp_path):
    """A channels-last .tflite (as litert_torch.to_channel_last_io makes) converted at batch 2
    takes tlexport's float32 NCHW batches of any size: the runtime transposes and resizes."""
    import litert_torch
    import torch

    from tlexport.formats.tflite.runtime import LiteRTRuntime
    from tlexport.runtimes.quiet import silenced

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "nhwc.tflite"
    with silenced():
        litert_torch.convert(litert_torch.to_channel_last_io(net, args=[0]), (torch.randn(2, 8, 8, 3),)).export(str(path))
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with LiteRTRuntime(path) as rt:
        assert rt.nhwc
        got = rt.run(x)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_litert_int8_io_helpers_round_trip():
    from tlexport.formats.tflite.runtime import _dequantize, _quantize

    x = np.linspace(-1, 1, 24, dtype=np.float32)
    detail = {"dtype": np.int8, "quantization": (1 / 64, 3)}
    q = _quantize(x, detail)
    assert q.dtype == np.int8
    assert np.abs(_dequantize(q, detail) - x).max() <= 1 / 128 + 1e-6


@pytest.mark.parametrize("fmt,module", [("tflite", "litert_torch"), ("executorch", "executorch"),
                                        ("triton", "tritonclient")])
def test_a_missing_extra_is_named_with_its_pip_command(fake_run, tmp_path, monkeypatch, fmt, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(tmp_path / "x"), "--format", fmt])
    assert r.exit_code != 0
    line = r.output.strip()
    assert "\n" not in line and line.startswith("Error: ") and f"'{module}'" in line and "pip install" in line, line
    assert not (tmp_path / "x").exists()  # refused before any work


def test_format_core_means_the_formats_without_extras_and_all_every_one_installed(monkeypatch):
    from tlexport.exporters import pipeline
    from tlexport.exporters.pipeline import check_options, expand_all, make_options
    from tlexport.formats import registry
    from tlexport.tables import extras

    formats, _ = check_options(("core",), ("fp32",), make_options(calib_method="minmax", calib_size=8))
    assert formats == ("onnx", "torchscript", "pt2")
    monkeypatch.setattr(extras, "installed", lambda module: module != "coremltools")
    monkeypatch.setattr(pipeline, "_unavailable", lambda fmt: "no page files" if fmt == "web" else None)
    formats, left_out = expand_all(("all",))
    assert formats == tuple(f for f in registry.names() if f not in ("coreml", "web"))
    assert len(left_out) == 2 and "coreml (in --format all): --format coreml needs the Python package " \
        "'coremltools'" in left_out[0] and left_out[1] == "web (in --format all): no page files"


@needs_edge
def test_edge_examples_give_predicts_probabilities_in_every_image_mode(edge_export, tmp_path):
    """Every mode and EXIF orientation (test_decoding's files): the LiteRT and ExecuTorch example
    apps, which decode through tlexport's own images.py, give predict's probabilities."""
    import importlib

    import torch
    from test_decoding import predicted_probs, write_mode_images

    files = sorted(write_mode_images(tmp_path / "modes").values())
    examples = str(Path(__file__).resolve().parents[1] / "examples")
    sys.path.insert(0, examples)
    try:
        app, litert, et = (importlib.import_module(m) for m in ("edge_app", "edge_litert", "edge_executorch"))
    finally:
        sys.path.remove(examples)
    meta = litert.read_metadata(edge_export / "model.tflite")
    interpreter = litert.Interpreter(model_path=str(edge_export / "model.tflite"))
    forward, et_classes, et_pre = et.load_model(edge_export / "model.pte")
    runs = {
        "model.tflite": (meta["classes"], meta["preprocess"], lambda x: litert.run(interpreter, x)[0]),
        "model.pte": (et_classes, et_pre,
                      lambda x: forward.execute([torch.from_numpy(np.ascontiguousarray(x))])[0][0].double().numpy()),
    }
    for model, (classes, pre, infer) in runs.items():
        expected = predicted_probs(edge_export / model, tmp_path / "modes")
        got = dict(app.probabilities(files, classes, pre, infer))
        assert {f.name for f in got} == set(expected), model
        for f, probs in got.items():
            assert not isinstance(probs, str), (model, f, probs)
            assert np.abs(probs - expected[f.name]).max() < 1e-5, (model, f.name)
