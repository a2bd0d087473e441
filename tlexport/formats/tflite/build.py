"""LiteRT (TFLite) export through litert-torch: `model.tflite` (fp32) and `model.int8.tflite`
(PT2E static int8 with int8 input/output tensors), metadata as a TFLite metadata entry.

litert-torch cannot lower a free batch dimension (its flatten/view lowering needs static shapes),
so the file is converted at the example batch and the runtime resizes the input tensor to each
batch (`Interpreter.resize_tensor_input`); the metadata says "dynamic" because any batch runs.
Input/output stay NCHW float32 like every tlexport model; NHWC or quantized I/O of other .tflite
files is handled by the runtime (formats/tflite/runtime.py).

litert-torch's quantizer cannot leave a module in float (set_module_name(name, None) is refused,
and it has no filter), so int8 is every layer (`--int8-fallback auto` and `none` alike; a node
list is refused up front, see this package's spec); its recovery path is its calibration methods.
"""

from __future__ import annotations

from ... import progress as P
from ...errors import ExportError, first_line
from ...exporters import int8 as shared
from ...exporters.job import Artifact
from . import SPEC
from .metadata import embed_tflite


def convert(job, precision: str, batches=None, method: str | None = None):
    """litert-torch's edge model for `precision` (batches: int8 calibration, float32 NCHW;
    method: None for the quantizer's histogram observer, or "minmax")."""
    import litert_torch

    model = job.model_on("cpu")
    if precision == "fp32":
        return litert_torch.convert(model, (job.example,))
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    config = shared.pt2e_config(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False), method)
    quantizer = PT2EQuantizer().set_global(config)
    module = torch.export.export(model, (job.example,)).module()
    quantized = shared.pt2e_calibrate(module, quantizer, batches, fold_quantize=False)
    return litert_torch.convert(quantized, (job.example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def build(job, say) -> list[Artifact]:
    """model.tflite or model.int8.tflite (the precision it is handed), converted on the CPU."""
    from ...runtimes.quiet import silenced
    from ..files import file_name

    batch = int(job.example.shape[0])
    precision = job.precision
    say(f"LiteRT {precision}")
    dst = job.staging / file_name("tflite", precision)
    notes = [f"converted at batch {batch}" + ("; the runtime resizes the input to any batch" if job.dynamic else ""),
             "NCHW float32 input like the other formats (litert_torch.to_channel_last_io makes NHWC)"]
    record = None
    if precision == "int8":
        record, more = int8_file(job, dst)
        notes += more
    else:
        try:
            with silenced(), P.step("waiting for litert_torch (conversion)"):
                convert(job, precision).export(str(dst))
            embed_tflite(dst, job.meta)
        except Exception as e:
            raise ExportError(f"LiteRT {precision} export failed ({first_line(e, 300)})") from None
    return [Artifact(dst.name, "tflite", precision, notes=notes, int8=record)]


def int8_file(job, dst):
    """`dst` under the shared recovery path (`exporters.int8.recover`): litert-torch cannot keep a
    layer float, so the path is its calibration methods (the histogram observer, then min/max),
    each converted and run by the LiteRT runtime on the gate images as verification runs it.

    Returns:
        (the manifest's int8 record, notes)
    """
    import shutil

    batch = int(job.example.shape[0])
    # The calibrated program is exported at the example batch, a fixed size: a short last
    # batch (45 images in batches of 2) would fail its shape guard, so it is padded.
    files, batches, source = shared.calibration(job, batch, pad=True)
    methods = shared.methods_to_try(job, "tflite", SPEC.int8)
    policy = job.options.int8.policy(job.spec.int8_fallback)
    gate, done, work = shared.gate(job.run), [], job.staging / ".int8-tflite"
    work.mkdir(exist_ok=True)
    try:
        trials = {m: _Trials(job, batches, m, gate, work, done) for m in methods}
        path, kept, res, _, method = shared.recover(trials.get, methods, "none")
        share = trials[method].shares[path]
        shutil.move(str(path), str(dst))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shared.check_reached(policy, res, job.options.verify, "", trials=done)
    name = shared.method_name(method, SPEC.int8)
    record = shared.record(policy, [], res, gate.inputs, done, reference="fp32 model (torch-eager CPU)",
                           calibration={"method": f"PT2E {name}", "images": len(files), "source": source,
                                        "tried": list(dict.fromkeys(t["method"] for t in done))},
                           why=f"{SPEC.int8.why}: every layer int8", **share)
    return record, [f"PT2E static int8 (per-channel symmetric weights, {name} activation ranges, int8 I/O tensors "
                    f"quantized by the runtime) calibrated on {len(files)} images; every layer int8 ({SPEC.int8.why}); "
                    f"top-1 agreement with fp32 {res.top1_agreement:.1f}% on {len(gate.inputs)} images"]


class _Trials:
    """keep (always none) -> (.tflite file, [], result): converted with `method`, run by the LiteRT
    runtime on the gate images. One per method; `done` is shared."""

    def __init__(self, job, batches, method, gate, work, done: list):
        self.job, self.batches, self.method, self.gate, self.work, self.done = job, batches, method, gate, work, done
        self.shares: dict = {}

    def __call__(self, keep):
        from ...runtimes.quiet import silenced

        path = self.work / f"trial-{len(self.done)}.tflite"
        try:
            with silenced(), P.step("waiting for litert_torch (calibration, conversion)"):
                convert(self.job, "int8", self.batches, self.method).export(str(path))
            embed_tflite(path, self.job.meta)
        except Exception as e:
            raise ExportError(f"LiteRT int8 export failed ({first_line(e, 300)})") from None
        self.shares[path] = tflite_share(path)
        res = self.gate.measure(path, "litert")
        self.done.append(shared.trial_row([], res, shared.method_name(self.method, SPEC.int8)))
        return path, [], res


LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")


def tflite_share(path) -> dict:
    """How much of a .tflite file is int8: {"quantized": convolution / fully-connected ops whose
    weight tensor is int8, "total": all of them}."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: str(t["dtype"]) for t in interp.get_tensor_details()}
    total = quantized = 0
    for op in interp._get_ops_details():  # the public API lists tensors, not ops
        if op["op_name"] in LAYER_OPS:
            total += 1
            quantized += len(op["inputs"]) > 1 and "int8" in dtypes.get(int(op["inputs"][1]), "")
    return {"quantized": int(quantized), "total": total}
