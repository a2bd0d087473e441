"""Accuracy-aware int8: calibration with any batch split, the fallback search, and the manifest
record of which layers stayed float and what agreement was reached on which images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.errors import UsageError
from tlexport.exporters import int8 as I8
from tlexport.exporters.options import parse_fallback
from tlexport.formats.onnx import quantize as Q

META = {"classes": ["circle", "square", "triangle"], "preprocess": {"crop": 48}, "arch": "resnet18",
        "weights_sha256": "0", "tlexport_version": "0", "torch_version": "0", "batch": "dynamic"}


@pytest.fixture(scope="module")
def prepared(fake_onnx_export, tmp_path_factory) -> Path:
    """The fake run's fp32 ONNX (shared, conftest.py) after onnxruntime's quantization pre-processing."""
    return Q.prepare(fake_onnx_export / "model.onnx", tmp_path_factory.mktemp("int8") / "pre.onnx")


def _train_files(fake_run, n):
    from tlexport.models import load_run

    run = load_run(fake_run)
    return [p for p, _ in run.samples("train")][:n], run.preprocess


def test_calibration_batches_keep_a_short_last_batch_unless_padded(fake_run):
    files, pre = _train_files(fake_run, 7)
    assert [len(b) for b in I8.calibration_batches(files, pre, 3)] == [3, 3, 1]
    padded = I8.calibration_batches(files, pre, 3, pad=True)
    assert [len(b) for b in padded] == [3, 3, 3]
    assert np.array_equal(padded[-1][1], padded[-1][0])  # padding repeats the last image


@pytest.mark.parametrize("method", Q.CALIB_METHODS)
def test_every_calibration_method_takes_uneven_batches(prepared, fake_run, tmp_path, method):
    """onnxruntime's percentile/entropy calibrators stack every batch into one array and fail
    on a short last batch; one batch per collect_data call must work for all three methods."""
    import onnx
    import onnxruntime as ort

    files, pre = _train_files(fake_run, 7)
    batches = I8.calibration_batches(files, pre, 3)
    cache = tmp_path / "ranges.json"
    dst = tmp_path / f"{method}.onnx"
    Q.to_int8(prepared, dst, batches=batches, method=method, meta=META, cache=cache)
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert cache.is_file() and json.loads(cache.read_text())  # ranges kept for the next trial
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48), dtype=np.float32)
    out = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert out.shape == (2, 3) and np.isfinite(out).all()
    # A second quantization with the cache reuses the same ranges: identical file content.
    again = tmp_path / f"{method}-again.onnx"
    Q.to_int8(prepared, again, batches=[], method=method, meta=META, cache=cache)
    assert again.read_bytes() == dst.read_bytes()


def test_float_nodes_resolve_aliases_and_reject_unknown_names(prepared):
    names = Q.candidate_nodes(prepared)
    assert Q.float_nodes(prepared, ("stem", "head")) == [names[0], names[-1]]
    assert Q.float_nodes(prepared, (names[3],)) == [names[3]]
    with pytest.raises(UsageError, match="no quantizable node named nope"):
        Q.float_nodes(prepared, ("nope",))


def test_parse_fallback():
    assert parse_fallback("auto") == "auto" and parse_fallback(" none ") == "none"
    assert parse_fallback("stem, head,stem") == ("stem", "head")
    assert parse_fallback(["node_Conv_1"]) == ("node_Conv_1",)
    with pytest.raises(UsageError):
        parse_fallback(" , ")


def test_fewest_float_finds_the_shortest_passing_prefix():
    class Res:
        def __init__(self, passed):
            self.passed = passed

    ranked = [f"n{i}" for i in range(40)]
    calls = []

    def trial(keep):  # the gate passes once n0..n6 are all float
        calls.append(len(keep))
        return "file", keep, Res(set(ranked[:7]) <= set(keep))

    path, keep, res = I8.fewest_float(trial, ranked)
    assert res.passed and keep == ranked[:7]
    assert len(calls) <= 2 * int(np.ceil(np.log2(len(ranked)))) + 1  # logarithmic, not one per layer
    _, keep, res = I8.fewest_float(lambda k: ("f", k, Res(False)), ranked)
    assert not res.passed and keep == ranked  # nothing passes: the caller sees the all-float failure


def test_recover_tries_each_method_then_layers_with_the_closest():
    """The recovery path every int8 format takes: each calibration method with every layer int8
    (the first that passes wins), then the fewest float layers calibrated with the method that
    came closest; a node list is tried with each method; `none` never keeps a layer float."""
    class Res:
        def __init__(self, passed, flips):
            self.passed, self.flips, self.images_lost = passed, [0] * flips, 0

    calls = []

    def trial_for(method):
        def trial(keep):
            calls.append((method, tuple(keep)))
            flips = {"minmax": 9, "percentile": 4, "entropy": 6}[method] - 2 * len(keep)
            return f"{method}-{len(keep)}", list(keep), Res(flips <= 1, flips)
        return trial

    methods = ["minmax", "percentile", "entropy"]
    rank = lambda first: [("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5)]  # noqa: E731
    art, kept, res, ranked, method = I8.recover(trial_for, methods, "auto", rank=rank)
    assert method == "percentile" and kept == ["a", "b"] and res.passed and ranked[0] == ("a", 3.0)
    assert calls[:3] == [("minmax", ()), ("percentile", ()), ("entropy", ())]  # methods before layers
    assert all(m == "percentile" for m, k in calls[3:])  # the closest method carries the layer search
    calls.clear()
    art, kept, res, ranked, method = I8.recover(trial_for, methods, "none", rank=rank)
    assert not res.passed and method == "percentile" and kept == [] and len(calls) == 3
    calls.clear()
    _, kept, res, _, method = I8.recover(trial_for, methods, ("x", "y", "z", "w"), resolve=list)
    assert res.passed and method == "minmax" and calls == [("minmax", ("x", "y", "z", "w"))]


def test_ratios_flag_an_int8_file_that_is_neither_smaller_nor_faster():
    """size_ratio against the same format's fp32 file (or the model's fp32 weights), speedup from
    export's timing on the format's own runtime; a file neither 2x smaller nor faster is
    published with a warning, and the ONNX record shared by ORT is copied, not overwritten."""
    from tlexport.exporters.job import Artifact

    shared_rec = {"quantized": 1, "total": 21}
    arts = [Artifact("model.xml", "openvino", "fp32", size=40, companions=[{"file": "model.bin", "size": 44_800_000}],
                     speed={"openvino": {"p50_ms": 17.6}}),
            Artifact("model.int8.xml", "openvino", "int8", size=40, companions=[{"file": "model.int8.bin", "size": 37_700_000}],
                     speed={"openvino": {"p50_ms": 16.9}}, int8=dict(shared_rec)),
            Artifact("model.onnx", "onnx", "fp32", size=44_800_000, speed={"openvino": {"p50_ms": 9.0},
                                                                           "onnxruntime": {"p50_ms": 12.0}}),
            Artifact("model.int8.onnx", "onnx", "int8", size=11_300_000, int8=shared_rec,
                     speed={"openvino": {"p50_ms": 10.0}, "onnxruntime": {"p50_ms": 4.0}}),
            Artifact("model.int8.ort", "ort", "int8", size=11_300_000, int8=shared_rec)]
    warnings = I8.ratios(arts, fp32_bytes=45_000_000)
    ov, onnx, ort = arts[1].int8, arts[3].int8, arts[4].int8
    assert ov["size_ratio"] == pytest.approx(37.7 / 44.8, abs=1e-3) and ov["speedup"] == pytest.approx(1.04, abs=0.01)
    assert ov["int8_real"] is False and len(warnings) == 1 and "model.int8.xml" in warnings[0]
    assert "1 of 21 layers int8" in warnings[0] and warnings[0] in arts[1].notes
    assert onnx["speedup"] == 3.0 and onnx["int8_real"] and onnx["size_vs"] == "model.onnx"  # onnxruntime, not openvino
    assert ort["size_vs"] == "the model's fp32 weights" and ort["speedup"] is None and ort["int8_real"]
    assert "size_ratio" not in shared_rec  # ORT's copy did not write into the ONNX record
    from tlexport.render import _int8_cell  # the export table's cell of the record

    assert _int8_cell(onnx) == "1/21, 0.25x, 3.0x"


def test_held_out_images_are_the_val_split_or_labelled_random(fake_run):
    from tlexport.models import load_run

    run = load_run(fake_run)
    inputs = I8.held_out(run)
    val = [str(p) for p, _ in run.samples("val")]
    train = {str(p) for p, _ in run.samples("train")}
    assert len(inputs) == len(val) == 12 and not set(val) & train  # never the calibration images
    assert all(any(v.endswith(n) for v in val) for n in inputs.names)
    assert inputs.labels is not None

    class NoSplit:
        preprocess = run.preprocess

        def samples(self, split):
            return []

    rnd = I8.held_out(NoSplit())
    assert rnd.labels is None and "random" in rnd.source and "not on disk" in rnd.source


def test_auto_fallback_keeps_the_most_sensitive_layers_and_records_them(fake_run, tmp_path, monkeypatch):
    """A gate that needs two layers in float (simulated on top of the real measurement): the
    export keeps exactly the two most sensitive layers float, says so in the manifest, and the
    shipped graph really has those layers unquantized."""
    import onnx

    real = Q.Trials.__call__

    def needs_two(self, keep):
        path, keep, res = real(self, keep)
        res.passed = len(keep) >= 2
        return path, keep, res

    monkeypatch.setattr(Q.Trials, "__call__", needs_two)
    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--precision", "int8", "--out", str(out),
                                 "--calib-size", "10", "--no-verify", "--calib-method", "onnx=minmax"])
    assert r.exit_code == 0, r.output
    (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    rec = art["int8"]
    assert rec["fallback"] == "auto" and len(rec["float_nodes"]) == 2
    assert rec["float_nodes"] == [n for n, _ in rec["sensitivity_db"][:2]]
    assert rec["images"] == 12 and rec["images_source"] == "the run's val split" and rec["labelled"]
    assert rec["trials"][0]["float_nodes"] == 0 and rec["trials"][-1]["passed"] in (True, False)
    assert 0.0 <= rec["top1_agreement"] <= 1.0 and rec["calibration"]["images"] == 10
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in Q.CANDIDATE_OPS:
            quantized = produced_by.get(node.input[1]) == "DequantizeLinear"
            assert quantized == (node.name not in rec["float_nodes"]), node.name
    assert "kept in float" in " ".join(art["notes"])


def test_bad_fallback_is_a_one_line_usage_error(fake_run, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--precision", "int8", "--out", str(tmp_path / "x"),
                                 "--int8-fallback", " , "])
    assert r.exit_code == 2, r.output
    assert "--int8-fallback" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_spatial_means_become_global_average_pools_and_compute_the_same():
    """Squeeze-excitation blocks and the classifier's pooling are exported as ReduceMean, which
    onnxruntime's quantizer leaves float; only a mean over H and W of an NCHW tensor with keepdims
    is rewritten, and the outputs do not change."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("hw", "neg", "c", "flat")]
    axes = {"hw": [2, 3], "neg": [-1, -2], "c": [1], "flat": [2, 3]}
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), f"axes_{k}") for k, v in axes.items()]
    nodes = [helper.make_node("ReduceMean", ["x", f"axes_{k}"], [k], name=f"mean_{k}", keepdims=0 if k == "flat" else 1)
             for k in axes]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits), opset_imports=[helper.make_opsetid("", 18)])
    model = onnx.shape_inference.infer_shapes(model)
    feed = {"x": np.random.default_rng(0).standard_normal((2, 4, 5, 5), dtype=np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)

    before = run(model)
    assert Q.pool_spatial_means(model) == 2
    assert [(n.name, n.op_type) for n in model.graph.node] == [
        ("mean_hw", "GlobalAveragePool"), ("mean_neg", "GlobalAveragePool"), ("mean_c", "ReduceMean"),
        ("mean_flat", "ReduceMean")]
    for a, b in zip(before, run(model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_prepared_resnet_pools_with_a_quantized_global_average_pool(prepared, fake_run, tmp_path):
    import onnx

    ops = [n.op_type for n in onnx.load(str(prepared)).graph.node]
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops
    files, pre = _train_files(fake_run, 4)
    dst = tmp_path / "q.onnx"
    Q.to_int8(prepared, dst, batches=I8.calibration_batches(files, pre, 4), method="minmax", meta=META)
    graph = onnx.load(str(dst)).graph
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    (pool,) = [n for n in graph.node if n.op_type == "GlobalAveragePool"]
    assert produced_by[pool.input[0]] == "DequantizeLinear"  # QDQ around it: onnxruntime fuses it to uint8
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == pool.output[0] for n in graph.node)


@pytest.fixture(scope="module")
def wide_val_run(tmp_path_factory) -> Path:
    """A run whose val split has 132 images (more than verification used to take): 32 px
    images, untrained resnet18, so int8 flips near-tied predictions as a not confident model does."""
    from conftest import write_fake_run
    from tlexport.data.synth import make_dataset

    root = tmp_path_factory.mktemp("wide")
    data = make_dataset(root / "data", classes=("circle", "square", "triangle"), per_class=4, val_per_class=44,
                        size=32, split=True)
    return write_fake_run(root / "run", data, ["circle", "square", "triangle"], crop=32, seed=3)


@pytest.mark.slow
def test_search_and_verification_measure_the_same_images_and_numbers(wide_val_run, tmp_path):
    """What the int8 search recorded and what `tlexport parity` (the function export's verification
    runs) measures on the published file are the same images, flips and verdict: with 132 val
    images both use all 132 (verification used to take 128: on 153 photos 3 flips passed the
    search at 98.04 % and failed verification at 97.66 %). An untrained model has many near-ties, so the
    verdict may go either way; that it is the same is what is asserted."""
    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", str(wide_val_run), "--precision", "int8", "--int8-fallback", "none",
                                 "--calib-size", "8", "--out", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "manifest.json").read_text())["artifacts"][0]["int8"]
    p = CliRunner().invoke(cli, ["parity", str(out), "--runtimes", "onnxruntime", "--json", str(tmp_path / "p.json")])
    report = json.loads((tmp_path / "p.json").read_text())
    (row,) = report["results"]
    assert report["images"] == rec["images"] == 132 and rec["images_source"] == "the run's val split"
    assert len(row["flips"]) == rec["flips"] and row["top1_agreement"] / 100 == pytest.approx(rec["top1_agreement"], abs=1e-4)
    assert row["allowed_flips"] == rec["allowed_flips"] == rec["gate"]["allowed_flips"] == 6  # 2 % at 95 % of 132
    assert row["passed"] is rec["passed"] and p.exit_code == (0 if rec["passed"] else 1), p.output


def test_a_format_that_cannot_use_the_method_fails_alone(fake_run, tmp_path):
    """--calib-method percentile over onnx and tflite: ONNX is calibrated with percentile and
    published; tflite's int8 alone fails, in one line that gives the per-format form."""
    pytest.importorskip("litert_torch")
    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "onnx,tflite", "--precision", "int8",
                                 "--calib-method", "percentile", "--calib-size", "8", "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    m = json.loads((out / "manifest.json").read_text())
    (art,) = m["artifacts"]
    assert art["file"] == "model.int8.onnx" and art["int8"]["calibration"]["method"] == "percentile"
    (failed,) = m["failed"]
    assert failed["file"] == "model.int8.tflite" and failed["stage"] == "build"
    assert "--calib-method percentile: tflite int8 cannot honour it" in failed["reason"]
    assert "--calib-method percentile,tflite=minmax" in failed["reason"] and "\n" not in failed["reason"]


@pytest.mark.parametrize("value,words", [
    ("ort=percentile", "ort int8 is the ONNX int8 file converted; give onnx=METHOD"),
    ("tflite=percentile", "tflite int8 cannot honour it"),
    ("nope=minmax", "no format named 'nope'"),
    ("minmax,entropy", "give one method for every format"),
])
def test_a_per_format_method_that_cannot_apply_is_a_usage_error(fake_run, tmp_path, value, words):
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "onnx,ort,tflite", "--precision", "int8",
                                 "--calib-method", value, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    assert words in r.output and r.output.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_per_format_methods_reach_each_format():
    from tlexport.exporters.options import Calibration

    c = Calibration.parse("onnx=percentile,tflite=minmax")
    assert (c.method_for("onnx"), c.method_for("tflite"), c.method_for("executorch")) == ("percentile", "minmax", None)
    c = Calibration.parse("entropy,executorch=minmax")
    assert c.method_for("onnx") == "entropy" and c.refusal("executorch") is None and c.refusal("tflite")
    assert c.refusal("coreml") is None  # weight-only int8 calibrates nothing: an overall method does not apply


def test_the_next_method_is_tried_when_the_default_misses_the_gate(fake_run, tmp_path, monkeypatch):
    """ONNX int8 under auto: minmax misses the gate (simulated on top of the real measurement),
    percentile passes with every layer int8; the record says what was tried."""
    real = Q.Trials.__call__

    def minmax_fails(self, keep):
        path, keep, res = real(self, keep)
        res.passed = self.method != "minmax"
        return path, keep, res

    monkeypatch.setattr(Q.Trials, "__call__", minmax_fails)
    out = tmp_path / "export"
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--precision", "int8", "--out", str(out),
                                 "--calib-size", "8", "--no-verify"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "manifest.json").read_text())["artifacts"][0]["int8"]
    assert rec["calibration"]["method"] == "percentile" and rec["calibration"]["tried"] == ["minmax", "percentile"]
    assert [(t["method"], t["float_nodes"]) for t in rec["trials"]] == [("minmax", 0), ("percentile", 0)]
    assert rec["float_nodes"] == [] and rec["quantized"] == rec["total"] == 21 and rec["size_ratio"] < 0.3


def test_an_int8_file_with_every_layer_float_is_flagged(fake_run, prepared, tmp_path):
    """Keeping every Conv/Gemm float leaves an "int8" file of fp32 size: the record counts 0 of 21
    layers int8, and the export says in one line that it is int8 in name only."""
    out = tmp_path / "export"
    names = ",".join(Q.candidate_nodes(prepared))
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--precision", "int8", "--out", str(out),
                                 "--calib-size", "8", "--int8-fallback", names, "--no-verify"])
    assert r.exit_code == 0, r.output
    (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    rec = art["int8"]
    assert (rec["quantized"], rec["total"]) == (0, 21) and rec["size_ratio"] > 0.9 and rec["int8_real"] is False
    assert "int8 in name more than in effect" in rec["warning"] and rec["warning"] in art["notes"]
    assert "int8 in name more than in effect" in r.output


def test_the_onnx_int8_gate_holds_on_every_runtime_parity_runs():
    """#26.3: the int8 search gates an ONNX file on each CPU runtime that runs it here (parity runs
    them all: OpenCV's DNN flipped 7 ants/bees images where onnxruntime flipped 5, and parity
    failed a file export had published); the browser, a Chromium per load, is left out as it is
    from export's timing."""
    from tlexport.formats import registry
    from tlexport.formats.onnx.quantize import gate_runtimes
    from tlexport.runtimes import runtime_class, runtime_names

    expected = [n for n in registry.get("onnx").runtimes_on("cpu") if n in runtime_names() and n != "browser"
                and runtime_class(n).unavailable_reason("cpu", "int8") is None]
    assert list(gate_runtimes()) == expected
    assert gate_runtimes()[0] == "onnxruntime" and "browser" not in gate_runtimes()
