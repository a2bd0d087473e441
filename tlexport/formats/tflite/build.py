"""LiteRT (TFLite) export through litert-torch: `model.tflite` (fp32) and `model.int8.tflite`
(PT2E static int8 with int8 input/output tensors), metadata as a TFLite metadata entry.

litert-torch cannot lower a free batch dimension (its flatten/view lowering needs static shapes),
so the file is converted at the example batch and the runtime resizes the input tensor to each
batch (`Interpreter.resize_tensor_input`); the metadata says "dynamic" because any batch runs.
Input/output stay NCHW float32 like every tlexport model; NHWC or quantized I/O of other .tflite
files is handled by the runtime (formats/tflite/runtime.py).

litert-torch's quantizer cannot leave a module in float (set_module_name(name, None) is refused,
and it has no filter), so int8 is every layer (`--int8-fallback auto` and `none` alike; a node
list is refused up front, see this package's spec) and export's verification gates the file.
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
    """model.tflite and/or model.int8.tflite, converted on the CPU."""
    from ...runtimes.quiet import silenced
    from ...tables.artifacts import file_name

    out = []
    batch = int(job.example.shape[0])
    for precision in job.precisions:
        say(f"LiteRT {precision}")
        dst = job.staging / file_name("tflite", precision)
        notes = [f"converted at batch {batch}" + ("; the runtime resizes the input to any batch" if job.dynamic else ""),
                 "NCHW float32 input like the other formats (litert_torch.to_channel_last_io makes NHWC)"]
        batches, files, record = None, [], None
        method, method_name = shared.pt2e_method(job, SPEC.int8)
        if precision == "int8":
            # The calibrated program is exported at the example batch, a fixed size: a short last
            # batch (45 images in batches of 2) would fail its shape guard, so it is padded.
            files, batches, source = shared.calibration(job, batch, pad=True)
        try:
            with silenced(), P.step("waiting for litert_torch (conversion)"):
                convert(job, precision, batches, method).export(str(dst))
            embed_tflite(dst, job.meta)
        except Exception as e:
            raise ExportError(f"LiteRT {precision} export failed ({first_line(e, 300)})") from None
        if precision == "int8":
            notes.append(f"PT2E static int8 (per-channel symmetric weights, {method_name} activation ranges, int8 I/O "
                         f"tensors quantized by the runtime) calibrated on {len(files)} images; every layer int8 "
                         f"({SPEC.int8.why})")
            policy = job.options.int8.policy(job.spec.int8_fallback)
            record = {"fallback": policy if isinstance(policy, str) else "auto", "float_nodes": [],
                      "calibration": {"method": f"PT2E {method_name}", "images": len(files), "source": source},
                      "why": f"{SPEC.int8.why}: every layer int8, gated by export's verification"}
        out.append(Artifact(dst.name, "tflite", precision, notes=notes, int8=record))
    return out
