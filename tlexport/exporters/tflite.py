"""LiteRT (TFLite) export through litert-torch: `model.tflite` (fp32) and `model.int8.tflite`
(PT2E static int8 with int8 input/output tensors), metadata as a TFLite metadata entry.

litert-torch cannot lower a free batch dimension (its flatten/view lowering needs static shapes),
so the file is converted at the example batch and the runtime resizes the input tensor to each
batch (`Interpreter.resize_tensor_input`); the metadata says "dynamic" because any batch runs.
Input/output stay NCHW float32 like every tlexport model; NHWC or quantized I/O of other .tflite
files is handled by the runtime (runtimes/litert_rt.py).
"""

from __future__ import annotations

from ..errors import ExportError, first_line
from ..tables import metadata as md


def convert(job, precision: str, batches=None):
    """litert-torch's edge model for `precision` (batches: int8 calibration, float32 NCHW)."""
    import litert_torch

    model = job.model_on("cpu")
    if precision == "fp32":
        return litert_torch.convert(model, (job.example,))
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # litert-torch's quantizer cannot leave a module in float (set_module_name(name, None) is
    # refused, and it has no filter): every layer is int8.
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, (job.example,)).module(), quantizer)
    with torch.no_grad():
        for b in batches:
            prepared(torch.from_numpy(b))
    quantized = convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(quantized, (job.example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def build(job, say) -> tuple[list, list[str]]:
    """model.tflite and/or model.int8.tflite, converted on the CPU."""
    from ..runtimes.quiet import silenced
    from ..tables.artifacts import file_name
    from . import quantize
    from .job import Artifact

    out, skipped = [], [f"tflite {p}: only fp32 and int8 .tflite are produced" for p in job.precisions
                        if p not in ("fp32", "int8")]
    batch = int(job.example.shape[0])
    for precision in [p for p in ("fp32", "int8") if p in job.precisions]:
        say(f"LiteRT {precision}" + (" (calibrating)" if precision == "int8" else ""))
        dst = job.staging / file_name("tflite", precision)
        notes = [f"converted at batch {batch}" + ("; the runtime resizes the input to any batch" if job.dynamic else ""),
                 "NCHW float32 input like the other formats (litert_torch.to_channel_last_io makes NHWC)"]
        batches, files = None, []
        if precision == "int8":
            o = job.options
            files = quantize.calibration_images(job.run, o["calib_data"], o["calib_size"])
            batches = quantize.calibration_batches(files, job.run.preprocess, batch)
        try:
            with silenced():
                convert(job, precision, batches).export(str(dst))
            md.embed_tflite(dst, job.meta)
        except Exception as e:
            raise ExportError(f"LiteRT {precision} export failed ({first_line(e, 300)})") from None
        if precision == "int8":
            notes.append(f"PT2E static int8 (per-channel symmetric weights, int8 I/O tensors quantized by the "
                         f"runtime) calibrated on {len(files)} images; every layer int8 (litert-torch's "
                         "quantizer cannot keep the stem and head in float)")
        record = None
        if precision == "int8":  # nothing to decide: export's verification gates the file
            record = {"fallback": "none", "float_nodes": [], "calibration": {"method": "PT2E observers",
                                                                               "images": len(files)},
                      "why": "litert-torch's quantizer cannot keep a layer in float"}
        out.append(Artifact(dst.name, "tflite", precision, devices=["cpu"], notes=notes, int8=record))
    return out, skipped
