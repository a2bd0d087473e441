"""fp16 conversion and int8 static quantization of the fp32 ONNX model (onnxruntime tools)."""

from __future__ import annotations

import contextlib
import io
import logging
import random
import warnings
from pathlib import Path

import numpy as np

from ..errors import ExportError, UsageError, first_line
from ..tables import metadata as md
from .onnx_graph import save_checked

CALIB_METHODS = ("minmax", "percentile", "entropy")


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
    md.embed_onnx(half, meta)
    save_checked(half, dst)


def calibration_images(run, calib_data: Path | str | None, calib_size: int) -> list[Path]:
    """Up to `calib_size` image files: from `calib_data` (a folder) or the run's train split.

    A fixed seed picks the subset so exports are reproducible.

    Raises:
        ExportError: no images to calibrate with.
    """
    from ..data.images import iter_image_files

    if calib_data is not None:
        folder = Path(calib_data)
        if not folder.is_dir():
            raise UsageError(f"--calib-data {folder} is not a folder")
        files = iter_image_files([folder])
        where = str(folder)
    else:
        files = [p for p, _ in run.samples("train")]
        where = f"the training split recorded in {run.dir / 'split.json'}"
    if not files:
        raise ExportError(f"int8 needs calibration images but none were found in {where}; "
                          "pass --calib-data DIR")
    if len(files) > calib_size:
        files = sorted(random.Random(0).sample(files, calib_size))
    return files


# Images per calibration call when the batch dimension is free. Calibration holds the activations
# of one call at a time (see `to_int8`), so this bounds its memory.
CALIB_BATCH = 8
HELDOUT_IMAGES = 256  # held-out images the int8 gate is measured on (the run's val split)
RANDOM_HELDOUT = 64  # seeded random inputs when the run has no val split on disk
SENSITIVITY_IMAGES = 8  # images whose every activation is compared to rank layers
CANDIDATE_OPS = ("Conv", "Gemm", "MatMul")  # the layers int8 quantizes and may keep in float
FALLBACKS = ("auto", "none")
ALIASES = ("stem", "head")


def calibration_batches(files: list[Path], preprocess, batch: int, *, pad: bool = False) -> list[np.ndarray]:
    """Preprocess exactly as at inference (`Preprocess.to_array`) into float32 NCHW batches of
    `batch` images. The last batch is shorter unless `pad` (a fixed-batch graph takes exactly
    `batch` images; it is then filled by repeating its last image)."""
    from ..data.images import BadImage

    arrays = []
    for f in files:
        try:
            arrays.append(preprocess.to_array(preprocess.load(f)))
        except BadImage:
            continue  # a broken training image must not stop the export
    if not arrays:
        raise ExportError("int8 needs calibration images but none of them could be read")
    out = []
    for i in range(0, len(arrays), batch):
        chunk = arrays[i : i + batch]
        if pad:
            chunk += [chunk[-1]] * (batch - len(chunk))
        out.append(np.stack(chunk).astype(np.float32))
    return out


def parse_fallback(value) -> str | tuple[str, ...]:
    """`--int8-fallback`: "auto", "none", or node names ("stem"/"head" name the first convolution
    and the last Gemm/MatMul) as a comma-separated string or a sequence.

    Raises:
        UsageError: an empty list.
    """
    if isinstance(value, str):
        if value.strip() in FALLBACKS:
            return value.strip()
        value = value.split(",")
    names = tuple(dict.fromkeys(v.strip() for v in value if v and v.strip()))
    if not names:
        raise UsageError("--int8-fallback takes auto, none, or node names separated by commas")
    if len(names) == 1 and names[0] in FALLBACKS:
        return names[0]
    return names


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
    node names of the result are the ones `--int8-fallback` and the manifest use."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:
        raise ExportError(f"int8 pre-processing failed ({first_line(e, 300)})") from None
    return dst


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
    try:
        with _quiet():
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
    md.embed_onnx(model, meta)
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


def held_out(run):
    """The images the int8 gate is measured on: the run's val split (never the calibration
    images, which come from the train split), else seeded random inputs (no labels)."""
    from ..verify.inputs import load_images, random_inputs

    samples = run.samples("val")
    if samples:
        return load_images(samples, run.preprocess, None, "the run's val split", HELDOUT_IMAGES)
    return random_inputs(RANDOM_HELDOUT, run.preprocess.crop, note=", the run's val split is not on disk")


def logits(path: Path, inputs, batch: int = 32, runtime: str = "onnxruntime") -> np.ndarray:
    """CPU logits of every held-out image from onnxruntime or OpenVINO (fixed-batch graphs are
    padded by the runtime)."""
    if runtime == "openvino":
        from ..runtimes.openvino_rt import OpenVINORuntime as Rt
    else:
        from ..runtimes.onnx_rt import OnnxRuntime as Rt

    with Rt(path, "int8") as rt:
        return np.concatenate([rt.run(b) for _, b in inputs.batches(batch)])


def gate_runtimes() -> tuple[str, ...]:
    """The CPU runtimes export's verification runs an int8 ONNX file with, so the ones its gate
    must hold on: onnxruntime, and OpenVINO where it is installed (its int8 kernels round
    differently; on the quickstart model all-int8 passed on onnxruntime and lost 1.7 points of
    accuracy on OpenVINO)."""
    from ..runtimes.openvino_rt import OpenVINORuntime

    return ("onnxruntime",) + (() if OpenVINORuntime.unavailable_reason("cpu", "int8") else ("openvino",))


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
    """Quantize with a given set of float nodes and measure the result against fp32 on the
    held-out images; every file is kept until the caller picks one."""

    def __init__(self, pre, work, batches, method, meta, inputs, ref, runtimes=("onnxruntime",)):
        self.pre, self.work, self.batches, self.method, self.meta = pre, work, batches, method, meta
        self.inputs, self.ref, self.runtimes = inputs, ref, tuple(runtimes)
        self.cache = work / "calibration.json"
        self.done: list[dict] = []

    def __call__(self, keep: list[str]):
        """(file, float nodes, result): the result of the runtime that did worst (the gate holds
        only when it holds on every runtime of `runtimes`)."""
        from ..verify.compare import compare, gates_for

        path = self.work / f"trial-{len(self.done)}.onnx"
        to_int8(self.pre, path, batches=self.batches, method=self.method, meta=self.meta, keep_float=keep,
                cache=self.cache)
        results = [compare(self.ref, logits(path, self.inputs, runtime=rt), self.inputs.labels, self.inputs.names,
                           "int8", gates_for("int8"), runtime=rt) for rt in self.runtimes]
        res = min(results, key=lambda r: (bool(r.passed), r.top1_agreement))  # a failing one first
        self.done.append({"float_nodes": len(keep), "top1_agreement": round(res.top1_agreement / 100, 4),
                          "accuracy_delta": res.accuracy_delta, "passed": all(bool(r.passed) for r in results),
                          "runtimes": {r.runtime: {"top1_agreement": round(r.top1_agreement / 100, 4),
                                                   "accuracy_delta": r.accuracy_delta, "passed": bool(r.passed)}
                                       for r in results}})
        return path, list(keep), res


def fewest_float(trial, ranked: list[str]):
    """The shortest prefix of `ranked` (most sensitive first) kept in float with which the gate
    passes: prefixes of 1, 2, 4, ... until one passes, then bisection down to the fewest. Each
    step is one quantization with cached calibration ranges, so a network of n layers costs
    about 2 log2(n) of them.

    Returns:
        the passing trial (path, nodes, result), or the all-float one when none passes.
    """
    lo, k, best = 0, 1, None
    while best is None:
        k = min(k, len(ranked))
        t = trial(ranked[:k])
        if t[2].passed or k == len(ranked):
            best, hi = t, k
        else:
            lo, k = k, k * 2
    if not best[2].passed:
        return best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = trial(ranked[:mid])
        if t[2].passed:
            best, hi = t, mid
        else:
            lo = mid
    return best


def build_int8(job, base: Path):
    """model.int8.onnx from the staged fp32 file: every Conv/Gemm int8 unless the held-out gate
    (parity's int8 gate against the fp32 model) fails, then the fewest most sensitive layers in
    float (`--int8-fallback auto`, the default), or exactly the named ones. The record of what
    stayed float and the agreement reached goes into the manifest (`Artifact.int8`)."""
    import os
    import shutil

    from ..tables.artifacts import file_name
    from .job import Artifact

    o = job.options
    policy = parse_fallback(o.get("int8_fallback") or job.spec.int8_fallback)
    files = calibration_images(job.run, o["calib_data"], o["calib_size"])
    fixed = None if job.dynamic else int(job.example.shape[0])
    batches = calibration_batches(files, job.run.preprocess, fixed or CALIB_BATCH, pad=fixed is not None)
    work = job.staging / ".int8"
    work.mkdir(exist_ok=True)
    try:
        pre = prepare(base, work / "pre.onnx")
        inputs = held_out(job.run)
        trial = Trials(pre, work, batches, o["calib_method"], job.meta, inputs, logits(base, inputs),
                       runtimes=gate_runtimes())
        path, kept, res, ranked = _search(trial, pre, policy, fixed, work)
        if policy == "auto" and not res.passed and o.get("verify", True):
            raise ExportError(f"int8 cannot reach its gate even with every layer in float ({'; '.join(res.failures)}); "
                              "--no-verify keeps such an artifact")
        dst = job.staging / file_name("onnx", "int8")
        os.replace(path, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    source = str(o["calib_data"]) if o["calib_data"] else "run train split"
    record = _record(policy, kept, res, inputs, trial.done, ranked, o["calib_method"], len(files), source,
                     trial.runtimes)
    o["_int8_record"] = record  # the OpenVINO int8 IR is converted from this file and shares it
    floats = f"; kept in float: {', '.join(kept)}" if kept else "; every Conv/Gemm int8"
    if not res.passed:
        floats += "; BELOW the int8 gate (" + "; ".join(res.failures) + ")"
    return Artifact(dst.name, "onnx", "int8", int8=record, notes=[
        f"QDQ static, per-channel int8 weights, uint8 activations; {o['calib_method']} calibration "
        f"on {len(files)} images from {source}{floats}; top-1 agreement with fp32 "
        f"{res.top1_agreement:.1f}% on {len(inputs)} images ({inputs.source})"])


def _search(trial, pre, policy, fixed, work):
    """Run the policy: (file, float nodes, result, sensitivity ranking)."""
    if policy == "none":
        return (*trial([]), [])
    if policy != "auto":
        return (*trial(float_nodes(pre, policy)), [])
    path, kept, res = trial([])
    if res.passed:
        return path, kept, res, []
    x = trial.inputs.batch(0, min(SENSITIVITY_IMAGES, len(trial.inputs)))
    if fixed:
        x = np.concatenate([x, np.repeat(x[-1:], max(0, fixed - len(x)), axis=0)])[:fixed]
    ranked = sensitivity(pre, path, x, candidate_nodes(pre), work)
    path, kept, res = fewest_float(trial, [n for n, _ in ranked])
    return path, kept, res, ranked


def _record(policy, kept, res, inputs, trials, ranked, method, n_calib, source, trial_runtimes=("onnxruntime",)) -> dict:
    from ..verify.compare import gates_for

    gates = gates_for("int8")
    return {
        "fallback": policy if isinstance(policy, str) else list(policy),
        "float_nodes": kept,
        "top1_agreement": round(res.top1_agreement / 100, 4),
        "accuracy_delta": res.accuracy_delta,
        "passed": bool(res.passed),
        "images": len(inputs), "images_source": inputs.source, "labelled": inputs.labels is not None,
        "reference": "fp32 ONNX (onnxruntime CPU)",
        "gate_runtimes": list(trial_runtimes),
        "gate": {"min_top1": gates.min_top1, "max_accuracy_drop": gates.max_accuracy_drop},
        "calibration": {"method": method, "images": n_calib, "source": source},
        "trials": trials,
        "sensitivity_db": [[n, round(v, 2)] for n, v in ranked[:10]],
    }
