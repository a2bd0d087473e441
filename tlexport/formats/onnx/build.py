"""`--format onnx`: model.onnx, and its fp16, int8 and baked-uint8 variants."""

from __future__ import annotations

from ...exporters.job import Artifact
from .stage import stage


def build(job, say) -> list[Artifact]:
    """One artifact per precision asked (fp16/int8 derive from the fp32 file, always staged), plus
    model.uint8.onnx with --bake-preprocess."""
    from ...tables.artifacts import BAKED, file_name
    from .baked import build_baked

    stage(job, "fp32", say)
    out = []
    for precision in job.precisions:
        staged = stage(job, precision, say)
        out.append(Artifact(staged.path.name, "onnx", precision, notes=list(staged.notes), int8=staged.int8))
    dst = job.staging / file_name("onnx", "fp32", BAKED)
    if job.options.onnx.bake_preprocess and not dst.exists():  # once per export (one call per precision)
        say("ONNX uint8 (baked preprocessing)")
        build_baked(job, dst)
        out.append(Artifact(dst.name, "onnx", "fp32", role=BAKED,
                            notes=["input uint8 NHWC RGB at the crop size; normalisation inside"]))
    return out
