"""`--format onnx`: model.onnx, and its fp16, int8 and baked-uint8 variants."""

from __future__ import annotations

from .onnx_graph import check_finite, export_onnx


def build(job, say) -> tuple[list, list[str]]:
    """model.onnx (always staged: fp16/int8/uint8 derive from it), fp16, int8, baked uint8."""
    from ..tables.artifacts import BAKED, file_name
    from . import quantize
    from .baked import build_baked
    from .job import Artifact

    base = job.staging / file_name("onnx", "fp32")
    check_finite(job.model, job.example)
    say("ONNX fp32")
    # Traced on the CPU: an ONNX graph does not depend on the tracing device.
    export_onnx(job.model, job.example, base, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
    out = [Artifact(base.name, "onnx", "fp32")] if "fp32" in job.precisions else []
    if "fp16" in job.precisions:
        say("ONNX fp16")
        dst = job.staging / file_name("onnx", "fp16")
        fp16_io = job.options["fp16_io"]
        quantize.to_fp16(base, dst, fp16_io=fp16_io, meta=job.meta)
        out.append(Artifact(dst.name, "onnx", "fp16",
                            notes=["fp16 input/output" if fp16_io else "float32 input/output"]))
    if "int8" in job.precisions:
        say("ONNX int8 (calibrating)")
        out.append(quantize.build_int8(job, base))
    if job.options["bake_preprocess"]:
        say("ONNX uint8 (baked preprocessing)")
        dst = job.staging / file_name("onnx", "fp32", BAKED)
        build_baked(job, dst)
        out.append(Artifact(dst.name, "onnx", "fp32", role=BAKED,
                            notes=["input uint8 NHWC RGB at the crop size; normalisation inside"]))
    return out, []
