"""fp16 conversion and accuracy-aware int8 static quantization of the fp32 ONNX model
(onnxruntime's tools). The int8 policy (`--int8-fallback`) and calibration images are the shared
ones of `tlexport.exporters.int8`; what is ONNX's own is here: QDQ quantization with
onnxruntime's calibrators, the per-layer sensitivity ranking, and the trials measured on
onnxruntime (and OpenVINO, where installed: export verifies int8 ONNX files on both)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from ... import progress as P
from ...errors import ExportError, UsageError, first_line
from ...exporters import int8 as shared
from ..spec import CALIB_METHODS
from .graph import save_checked
from .metadata import embed_onnx


def to_fp16(src: Path, dst: Path, *, fp16_io: bool, meta: dict) -> None:
    """fp16 weights and compute; float32 input/output unless `fp16_io` (Cast nodes at the edges).

    Args:
        src: the fp32 ONNX file.
        dst: destination (temporary name).
        fp16_io: make the graph's input and output float16 too.
        meta: metadata to embed.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(model, keep_io_types=not fp16_io, disable_shape_infer=False)
            # The converter appends its input Cast nodes at the end; the checker wants topological order.
            OnnxModel(half).topological_sort()
    except Exception as e:
        raise ExportError(f"fp16 conversion failed ({first_line(e, 300)})") from None
    embed_onnx(half, meta)
    save_checked(half, dst)


# Images per calibration call when the batch dimension is free. Calibration holds the activations
# of one call at a time (see `to_int8`), so this bounds its memory.
CALIB_BATCH = 8
SENSITIVITY_IMAGES = 8  # images whose every activation is compared to rank layers
CANDIDATE_OPS = ("Conv", "Gemm", "MatMul")  # the layers int8 quantizes and may keep in float


def candidate_nodes(path: Path) -> list[str]:
    """The names of the layers int8 quantizes (Conv, Gemm, MatMul) in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in CANDIDATE_OPS]


def float_nodes(path: Path, keep: tuple[str, ...]) -> list[str]:
    """Node names of `path` for the names in `keep`: graph node names, or the aliases "stem" (the
    first convolution, which sees raw pixels) and "head" (the last Gemm/MatMul: the logits).

    Raises:
        UsageError: a name that is no quantizable node of the graph (a few real ones are named).
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    heads = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    picked = {"stem": convs[:1], "head": heads[-1:]}
    names = candidate_nodes(path)
    unknown = [k for k in keep if k not in picked and k not in names]
    if unknown:
        shown = ", ".join(names[:3] + names[-2:])
        raise UsageError(f"--int8-fallback: no quantizable node named {', '.join(unknown)} "
                         f"(the graph's are e.g. {shown}; or use stem, head, auto, none)")
    out = [n for k in keep for n in (picked.get(k) or [k])]
    return list(dict.fromkeys(out))


def prepare(src: Path, dst: Path) -> Path:
    """onnxruntime's quantization pre-processing (shape inference + graph optimisation), once:
    node names of the result are the ones `--int8-fallback` and the manifest use. Spatial means
    then become GlobalAveragePool (`pool_spatial_means`)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:
        raise ExportError(f"int8 pre-processing failed ({first_line(e, 300)})") from None
    model = onnx.load(str(dst))
    if pool_spatial_means(model):
        save_checked(model, dst)
    return dst


def pool_spatial_means(model) -> int:
    """Replace every ReduceMean over the two spatial axes of a 4-D tensor (keepdims) by the
    GlobalAveragePool it computes, in place; returns how many.

    Why: torch exports adaptive average pooling (the classifier's pooling, and every
    squeeze-excitation block of MobileNetV3 / EfficientNet / RegNetY) as ReduceMean, which
    onnxruntime's quantizer leaves float, so each one became DequantizeLinear -> ReduceMean over a
    channels-last tensor -> QuantizeLinear. A GlobalAveragePool is quantized and fused into one
    channels-last QLinearGlobalAveragePool: measured on efficientnet_b0 (17 of them) its pooling
    went from 1.87 ms to 0.27 ms of a 9.8 ms int8 call (benchmarks/int8_profile.py).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input]
             if v.type.tensor_type.HasField("shape")}
    done = 0
    for i, node in enumerate(graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in consts:
            axes = consts[node.input[1]].tolist()
        if attrs.get("keepdims", 1) != 1 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            continue
        graph.node.remove(node)
        graph.node.insert(i, helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
        done += 1
    return done


def _reader(batches: list[np.ndarray]):
    """A calibration reader with `__len__` and `set_range`, so quantize_static's strided loop
    (`CalibStridedMinMax`, stride 1; it serves every method, not only minmax) hands the
    calibrator one batch per `collect_data` call. The histogram calibrators (percentile, entropy)
    then merge per-batch histograms instead of stacking every batch's activations: batches of
    different sizes work, and memory holds one batch of activations plus fixed-size histograms."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(batches))

        def __len__(self):
            return len(batches)

        def set_range(self, start_index: int, end_index: int):
            self.it = iter(batches[start_index:end_index])

        def get_next(self):
            b = next(self.it, None)
            if b is not None:
                P.advance(len(b))  # the batch handed before this one is calibrated
            return None if b is None else {"image": b}

    return Reader()


def to_int8(pre: Path, dst: Path, *, batches: list[np.ndarray], method: str, meta: dict,
            keep_float: list[str] = (), cache: Path | None = None) -> None:
    """Static QDQ quantization of a pre-processed fp32 model (`prepare`): per-channel int8
    weights, uint8 activations.

    Memory is bounded by one calibration batch's activations (every calibrated tensor of one
    `batches` item) plus, for percentile/entropy, a histogram per tensor (2048 / 128 bins).

    Args:
        pre: the pre-processed fp32 ONNX file.
        dst: destination (temporary name).
        batches: float32 NCHW calibration batches (sizes may differ).
        method: minmax | percentile | entropy.
        meta: metadata to embed.
        keep_float: graph node names left in float.
        cache: calibration ranges file: computed on the first call, reused by later ones.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose from {', '.join(CALIB_METHODS)}")
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    cached = cache is not None and cache.is_file()  # ranges computed by an earlier trial: no calibration
    step = P.step("quantizing") if cached else P.step("calibrating", sum(len(b) for b in batches), "images")
    try:
        with _quiet(), step:
            quantize_static(str(pre), str(dst), _reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate, nodes_to_exclude=list(keep_float),
                            calibration_cache_path=str(cache) if cache else None,
                            extra_options={"CalibMovingAverage": False, "CalibStridedMinMax": 1})
    except (ExportError, UsageError):
        raise
    except Exception as e:
        raise ExportError(f"int8 quantization failed ({first_line(e, 300)})") from None
    finally:
        for tmp in dst.parent.glob("augmented_model*.onnx"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    model = onnx.load(str(dst))
    embed_onnx(model, meta)
    save_checked(model, dst)


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs and prints a lot; none of it is for the user."""
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def logits(path: Path, inputs, batch: int = 16, runtime: str = "onnxruntime") -> np.ndarray:
    """CPU logits of every held-out image from a runtime of the registry (onnxruntime, openvino;
    fixed-batch graphs are padded by the runtime)."""
    from ...runtimes import runtime_class

    with runtime_class(runtime)(path, "int8") as rt:
        batches = P.counted(inputs.batches(batch), f"held-out check on {runtime}", len(inputs), "images",
                            size=lambda item: len(item[1]))
        return np.concatenate([rt.run(b) for _, b in batches])


def gate_runtimes(dynamic: bool = True) -> tuple[str, ...]:
    """The CPU runtimes an int8 ONNX file is checked on, so the ones its gate must hold on: every
    runtime of the ONNX spec that runs int8 here and that export runs (the browser, a Chromium per
    load, is left out as it is from export's timing). `tlexport parity` runs the same ones: each
    runtime's int8 kernels round differently (on the quickstart model all-int8 passed on
    onnxruntime and lost 1.7 points of accuracy on OpenVINO; on the ants/bees photos OpenCV's DNN
    flipped 7 images where onnxruntime flipped 5), so a file gated on one could fail parity on
    another. A fixed-batch graph (`--batch N`) is not gated on OpenCV: OpenCV runs int8 one image
    per call (batched, its int8 layers mix images) and cannot reshape a fixed batch to one."""
    from ...runtimes import runtime_class, runtime_names
    from .. import registry

    names = []
    for name in registry.get("onnx").runtimes_on("cpu"):
        if name not in runtime_names() or (name == "opencv" and not dynamic):
            continue
        cls = runtime_class(name)
        if getattr(cls, "timed_at_export", True) and cls.unavailable_reason("cpu", "int8") is None:
            names.append(name)
    return tuple(names) or ("onnxruntime",)


def sensitivity(pre: Path, qdq: Path, x: np.ndarray, candidates: list[str], work: Path) -> list[tuple[str, float]]:
    """Candidates ranked by the signal-to-quantization-noise ratio (dB) each one loses in the
    all-int8 model: SQNR of its input against fp32 minus SQNR of its output against fp32, from
    onnxruntime's QDQ debugging helpers on the images `x`. A layer that turns a clean input into
    a noisy output is the one worth keeping in float; total error, which only grows with depth,
    would rank the last layers first whatever they do.

    Returns:
        [(node name, dB lost)], most sensitive first.
    """
    import math

    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, compute_signal_to_quantization_noice_ratio as sqnr,
        modify_model_output_intermediate_tensors)

    acts = {}
    for name, path, ops in (("float", pre, None), ("qdq", qdq, [*CANDIDATE_OPS, "DequantizeLinear"])):
        aug = work / f"debug-{name}.onnx"
        with _quiet():
            modify_model_output_intermediate_tensors(str(path), str(aug), op_types_for_saving=ops)
            acts[name] = collect_activations(str(aug), _reader([x]), execution_providers=["CPUExecutionProvider"])
        aug.unlink()
    acts["float"]["image"] = [x]
    qdq_nodes = {n.name: n for n in onnx.load(str(qdq), load_external_data=False).graph.node}
    graph = onnx.load(str(pre), load_external_data=False).graph
    ranked = []
    for node in (n for n in graph.node if n.name in candidates):
        # The QDQ graph keeps node names; its tensors around a node may be renamed.
        twin = qdq_nodes.get(node.name)
        pairs = [(node.input[0], twin and twin.input[0]), (node.output[0], twin and twin.output[0])]
        s_in, s_out = (sqnr(acts["float"][f], acts["qdq"][q]) if f in acts["float"] and q in acts["qdq"]
                       else math.inf for f, q in pairs)
        lost = min(s_in, 100.0) - min(s_out, 100.0)  # inf: no noise at all (e.g. a float input)
        ranked.append((node.name, float(lost)))
    ranked.sort(key=lambda t: -t[1])
    return ranked


class Trials:
    """Quantize with a given set of float nodes and measure the result against torch-eager on the
    export's gate images (`exporters.int8.Gate`, as verification measures it); every file is kept
    until the caller picks one. One instance per calibration method; `done` is shared."""

    def __init__(self, pre, work, batches, method, meta, gate, done: list, runtimes=("onnxruntime",)):
        self.pre, self.work, self.batches, self.method, self.meta = pre, work, batches, method, meta
        self.gate, self.runtimes, self.done = gate, tuple(runtimes), done
        self.inputs = gate.inputs
        self.cache = work / f"calibration-{method}.json"  # ranges computed once per method

    def __call__(self, keep: list[str]):
        """(file, float nodes, result): the result of the runtime that did worst (the gate holds
        only when it holds on every runtime of `runtimes`)."""
        path = self.work / f"trial-{len(self.done)}.onnx"
        to_int8(self.pre, path, batches=self.batches, method=self.method, meta=self.meta, keep_float=keep,
                cache=self.cache)
        results = [self.gate.measure(path, rt) for rt in self.runtimes]
        res = min(results, key=lambda r: (bool(r.passed), shared.closeness(r)))  # a failing one first
        self.done.append({**shared.trial_row(keep, res, self.method), "passed": all(bool(r.passed) for r in results),
                          "runtimes": {r.runtime: {"top1_agreement": round(r.top1_agreement / 100, 4),
                                                   "flips": len(r.flips), "accuracy_delta": r.accuracy_delta,
                                                   "passed": bool(r.passed)} for r in results}})
        res.passed = all(bool(r.passed) for r in results)
        return path, list(keep), res


def build_int8(job, base: Path, dst: Path):
    """The int8 ONNX file at `dst` from the staged fp32 file `base`, under the shared recovery path
    (`exporters.int8.recover`): every Conv/Gemm/MatMul int8 with each calibration method in turn
    until the gate passes, then the fewest most sensitive layers (ranked by SQNR lost) in float,
    or exactly the named ones.

    Returns:
        (the manifest's int8 record, notes): formats converted from this file reuse both.
    """
    import os
    import shutil

    from . import SPEC

    policy = job.options.int8.policy(job.spec.int8_fallback)
    methods = shared.methods_to_try(job, "onnx", SPEC.int8)
    fixed = None if job.dynamic else int(job.example.shape[0])
    files, batches, source = shared.calibration(job, fixed or CALIB_BATCH, pad=fixed is not None)
    work = job.staging / ".int8"
    work.mkdir(exist_ok=True)
    done: list[dict] = []
    try:
        pre = prepare(base, work / "pre.onnx")
        gate, runtimes = shared.gate(job.run), gate_runtimes(job.dynamic)
        trials = {m: Trials(pre, work, batches, m, job.meta, gate, done, runtimes=runtimes) for m in methods}
        path, kept, res, ranked, method = shared.recover(
            trials.get, methods, policy, resolve=lambda names: float_nodes(pre, names),
            rank=lambda first: _rank(pre, first[0], gate.inputs, fixed, work))
        if policy == "auto" and not res.passed:
            shared.check_reached(policy, res, job.options.verify, f"all {len(kept)} Conv/Gemm/MatMul layers",
                                 trials=done, still_int8=still_int8(path, kept))
        share = quantized_share(path)
        os.replace(path, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = shared.record(policy, kept, res, gate.inputs, done, reference="fp32 model (torch-eager CPU)",
                           calibration={"method": method, "images": len(files), "source": source,
                                        "tried": list(dict.fromkeys(t["method"] for t in done))},
                           gate_runtimes=list(runtimes), **share,
                           sensitivity_db=[[n, round(v, 2)] for n, v in ranked[:10]])
    floats = f"; kept in float: {', '.join(kept)}" if kept else "; every Conv/Gemm int8"
    if not res.passed:
        floats += "; BELOW the int8 gate (" + "; ".join(res.failures) + ")"
    return record, [f"QDQ static, per-channel int8 weights, uint8 activations; {method} calibration on "
                    f"{len(files)} images from {source}{floats}; top-1 agreement with fp32 "
                    f"{res.top1_agreement:.1f}% on {len(gate.inputs)} images ({gate.inputs.source})"]


def quantized_share(path: Path) -> dict:
    """How much of the QDQ file is int8: {"quantized": Conv/Gemm/MatMul layers whose weight is a
    dequantized int8 tensor, "total": all of them}."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    layers = [n for n in graph.node if n.op_type in CANDIDATE_OPS]
    quantized = sum(1 for n in layers if len(n.input) > 1 and produced_by.get(n.input[1]) == "DequantizeLinear")
    return {"quantized": quantized, "total": len(layers)}


def still_int8(path: Path, keep) -> str:
    """In words, what the QDQ file `path` still quantizes outside the float nodes `keep`: the
    graph input and the op types that read a dequantized activation ("the input, 8 Add, 1
    MaxPool"). onnxruntime's quantizer also puts Q/DQ pairs on the tensors between float layers
    (residual Adds, pooling, the input), so keeping every Conv/Gemm/MatMul float is not float."""
    from collections import Counter

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    acts = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in weights}
    ops = Counter(n.op_type for n in graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and n.name not in set(keep)
                  and any(i in acts for i in n.input))
    inputs = {i.name for i in graph.input}
    parts = ["the input"] if any(n.op_type == "QuantizeLinear" and n.input[0] in inputs for n in graph.node) else []
    parts += [f"{k} {op}" for op, k in ops.most_common()]
    return (f"{', '.join(parts)} stay int8 (quantize/dequantize pairs on the tensors between the float layers)"
            if parts else "nothing stays int8")


def _rank(pre: Path, qdq: Path, inputs, fixed: int | None, work: Path) -> list[tuple[str, float]]:
    """The layers of the all-int8 file `qdq`, most sensitive first (see `sensitivity`)."""
    x = inputs.batch(0, min(SENSITIVITY_IMAGES, len(inputs)))
    if fixed:
        x = np.concatenate([x, np.repeat(x[-1:], max(0, fixed - len(x)), axis=0)])[:fixed]
    return sensitivity(pre, qdq, x, candidate_nodes(pre), work)
