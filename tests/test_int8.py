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
                                 "--calib-size", "10", "--no-verify"])
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
