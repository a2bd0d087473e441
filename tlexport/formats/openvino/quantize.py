"""The int8 IR by NNCF's post-training quantization of the fp32 IR, where `nncf` is installed.

Why not only convert the QDQ int8 ONNX (what `model.int8.onnx` is, and still the path without
nncf or with `--calib-method percentile|entropy`): onnxruntime's pre-processing inlines
HardSwish into HardSigmoid + Mul and its quantizer puts Q/DQ pairs around every op it does not
fuse, and OpenVINO runs each of those as a FakeQuantize, Subtract, Convert or Reorder in float.
On mobilenet_v3_large that graph ran 0.83x the fp32 IR; NNCF places FakeQuantize where
OpenVINO's CPU plugin fuses it (inputs of convolutions and matmuls, with the activations fused as
post-ops) and the same network ran 1.7x (batch 1) to 2.2x (batch 8) the fp32 IR
(benchmarks/int8_profile.py, docs/int8-speed.md).

The policy is the shared one (`exporters.int8`): every layer int8 when the held-out gate holds on
OpenVINO, else the fewest layers kept float in the order of onnxruntime's sensitivity ranking
(the same ONNX node names `--int8-fallback` takes), with `ignored_scope`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from ... import progress as P
from ...errors import ExportError, UsageError, first_line
from ...exporters import int8 as shared
from ...tables.metadata import to_json
from . import SPEC
from .metadata import IR_RT_INFO

LAYER_TYPES = ("Convolution", "GroupConvolution", "MatMul")  # what NNCF quantizes and may leave float


def nncf_method(method: str | None) -> bool:
    """Whether NNCF makes the int8 IR for this `--calib-method` (installed, and minmax or the
    default: percentile and entropy are onnxruntime's calibrators, so those convert the ONNX file)."""
    return method in (None, "minmax") and importlib.util.find_spec("nncf") is not None


def layer_names(model) -> dict[str, str]:
    """ONNX node name -> the name of the OpenVINO op it became, for every Convolution /
    GroupConvolution / MatMul of an IR converted from tlexport's ONNX (OpenVINO names a layer
    with a bias `<node>/WithoutBiases`)."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in LAYER_TYPES:
            name = op.get_friendly_name()
            out[name.removesuffix("/WithoutBiases")] = name
    return out


def float_layers(names: dict[str, str], keep) -> list[str]:
    """The ONNX node names of `keep` (aliases "stem": the first convolution, "head": the last
    matmul) that this IR has.

    Raises:
        UsageError: a name that is no layer of the IR (a few real ones are named).
    """
    onnx_names = list(names)
    convs = [n for n in onnx_names if "Conv" in n]
    picked = {"stem": convs[:1] or onnx_names[:1], "head": onnx_names[-1:]}
    unknown = [k for k in keep if k not in picked and k not in names]
    if unknown:
        shown = ", ".join(onnx_names[:3] + onnx_names[-2:])
        raise UsageError(f"--int8-fallback: OpenVINO int8 has no layer named {', '.join(unknown)} "
                         f"(its are e.g. {shown}; or use stem, head, auto, none)")
    return list(dict.fromkeys(n for k in keep for n in (picked.get(k) or [k])))


# NNCF's activation range estimators for the recovery path: min/max, then per-image quantiles
# averaged (NNCF's percentile-style estimator, which clips the rare outliers min/max follows).
NNCF_RANGES = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}


class Trials:
    """keep -> (IR file, keep, result): NNCF quantization with those layers float, measured on
    OpenVINO against torch-eager on the export's gate images (`exporters.int8.Gate`, as
    verification measures it); every file kept until one is picked. One per range estimator."""

    def __init__(self, model, names, work: Path, batches, gate, meta: dict, method: str, done: list):
        self.model, self.names, self.work, self.batches = model, names, work, batches
        self.gate, self.meta, self.method, self.done = gate, meta, method, done

    def __call__(self, keep: list[str]):
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        from ...runtimes.quiet import silenced

        scope = nncf.IgnoredScope(names=[self.names[k] for k in keep])
        ranges = getattr(RangeEstimatorParametersSet, NNCF_RANGES[self.method])
        # NNCF draws progress bars and logs its steps (silenced): its work is named, not counted
        with silenced(), P.step(f"NNCF calibrating on {sum(len(b) for b in self.batches)} images"):
            quantized = nncf.quantize(
                self.model.clone(), nncf.Dataset(self.batches), subset_size=len(self.batches), ignored_scope=scope,
                advanced_parameters=AdvancedQuantizationParameters(activations_range_estimator_params=ranges))
        path = self.work / f"trial-{len(self.done)}.xml"
        quantized.set_rt_info(to_json(self.meta), list(IR_RT_INFO))
        ov.save_model(quantized, str(path), compress_to_fp16=False)
        res = self.gate.measure(path, "openvino")
        self.done.append(shared.trial_row(keep, res, self.method))
        return path, list(keep), res


def quantized_share(path: Path) -> dict:
    """How much of the IR is int8: {"quantized": Convolution / GroupConvolution / MatMul layers
    whose weights are stored in int8 (NNCF compresses the weights of the layers it quantizes),
    "total": all of them}."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    total = quantized = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in LAYER_TYPES:
            continue
        total += 1
        if _int8_weights(op.input_value(1).get_node()):
            quantized += 1
    return {"quantized": quantized, "total": total}


def _int8_weights(node, depth: int = 0) -> bool:
    """Whether a layer's weight input comes from an int8/uint8 constant (through the Convert,
    Subtract, Multiply, Reshape or FakeQuantize nodes of a decompression chain)."""
    if node.get_type_name() == "Constant":
        return node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
    if depth > 6:
        return False
    return any(_int8_weights(v.get_node(), depth + 1) for v in node.input_values())


def build_int8(job, fp32_onnx: Path, fp32_ir: Path, dst: Path):
    """`dst` (+ .bin): NNCF int8 of the fp32 IR under the shared recovery path
    (`exporters.int8.recover`): min/max then quantile ranges with every layer int8, then the
    fewest most sensitive layers float.

    Returns:
        (the manifest's int8 record, notes)
    Raises:
        ExportError: NNCF failed, or `auto` cannot reach the gate (unless --no-verify).
    """
    import openvino as ov

    policy = job.options.int8.policy(job.spec.int8_fallback)
    methods = [m for m in shared.methods_to_try(job, "openvino", SPEC.int8) if m in NNCF_RANGES]
    fixed = None if job.dynamic else int(job.example.shape[0])
    # NNCF collects statistics per dataset item: single images when the batch is free.
    files, batches, source = shared.calibration(job, fixed or 1, pad=fixed is not None)
    work = job.staging / ".int8-openvino"
    work.mkdir(exist_ok=True)
    done: list[dict] = []
    try:
        gate = shared.gate(job.run)
        model = ov.Core().read_model(str(fp32_ir))
        names = layer_names(model)
        trials = {m: Trials(model, names, work, batches, gate, job.meta, m, done) for m in methods}
        try:
            path, kept, res, ranked, method = shared.recover(
                trials.get, methods, policy, resolve=lambda keep: float_layers(names, keep),
                rank=lambda first: _rank(job, fp32_onnx, names, gate.inputs, fixed, work))
        except (ExportError, UsageError):
            raise
        except Exception as e:  # NNCF and OpenVINO raise plain exceptions with long messages
            raise ExportError(f"NNCF int8 quantization failed ({first_line(e, 300)})") from None
        if policy == "auto" and not res.passed:
            shared.check_reached(policy, res, job.options.verify, f"all {len(kept)} ranked layers", trials=done,
                                 still_int8="the layers NNCF quantizes between them (pooling, additions) stay int8")
        share = quantized_share(path)
        for suffix in (".xml", ".bin"):
            shutil.move(str(path.with_suffix(suffix)), str(dst.with_suffix(suffix)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = shared.record(policy, kept, res, gate.inputs, done, reference="fp32 model (torch-eager CPU)",
                           calibration={"method": f"NNCF {NNCF_RANGES[method]}", "images": len(files), "source": source,
                                        "tried": list(dict.fromkeys(t["method"] for t in done))},
                           gate_runtimes=["openvino"], quantizer=f"NNCF {_version()} post-training quantization of the fp32 IR",
                           sensitivity_db=[[n, round(v, 2)] for n, v in ranked[:10]], **share)
    floats = f"kept in float: {', '.join(kept)}" if kept else "every convolution and matmul int8"
    return record, [f"NNCF post-training int8 of the fp32 IR (symmetric per-channel weights, {NNCF_RANGES[method]} "
                    f"activation ranges, fast bias correction) calibrated on {len(files)} images from {source}; {floats}; "
                    f"top-1 agreement with fp32 {res.top1_agreement:.1f}% on {len(gate.inputs)} images ({gate.inputs.source})"]


def _version() -> str:
    from importlib.metadata import version

    return version("nncf")


def _rank(job, fp32_onnx: Path, names: dict[str, str], inputs, fixed, work: Path) -> list[tuple[str, float]]:
    """Layers most sensitive first: onnxruntime's SQNR ranking of the all-int8 QDQ model
    (`onnx.quantize.sensitivity`), restricted to the layers this IR has."""
    from ..onnx import quantize as onnx_q

    pre = onnx_q.prepare(fp32_onnx, work / "pre.onnx")
    qdq = work / "all-int8.onnx"
    _, batches, _ = shared.calibration(job, fixed or onnx_q.CALIB_BATCH, pad=fixed is not None)
    onnx_q.to_int8(pre, qdq, batches=batches, method="minmax", meta=job.meta)
    x = inputs.batch(0, min(onnx_q.SENSITIVITY_IMAGES, len(inputs)))
    if fixed:
        x = np.concatenate([x, np.repeat(x[-1:], max(0, fixed - len(x)), axis=0)])[:fixed]
    ranked = onnx_q.sensitivity(pre, qdq, x, onnx_q.candidate_nodes(pre), work)
    return [(n, v) for n, v in ranked if n in names]
