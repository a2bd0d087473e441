"""`--format onnx`: model.onnx, its fp16 and int8 variants, and the in-graph preprocessing model."""

from __future__ import annotations

from ...exporters.job import Artifact
from .stage import stage


def build(job, say) -> list[Artifact]:
    """The ONNX file of the one precision it is handed (fp16/int8 derive from the fp32 file, always
    staged), plus, once per export, model.uint8.onnx (decoded uint8 image in, the whole
    preprocessing inside) with --bake-preprocess."""
    from ..files import file_name
    from ..spec import BAKED
    from .baked import build_baked

    fp32 = stage(job, "fp32", say)
    staged = stage(job, job.precision, say)
    out = [Artifact(staged.path.name, "onnx", job.precision, notes=list(staged.notes), int8=staged.int8)]
    dst = job.staging / file_name("onnx", "fp32", BAKED)
    if job.options.of("onnx").bake_preprocess and not dst.exists():  # once per export (one call per precision)
        say("ONNX with the preprocessing in the graph")
        notes = build_baked(job, fp32.path, dst)
        out.append(Artifact(dst.name, "onnx", "fp32", role=BAKED, notes=notes))
    return out
