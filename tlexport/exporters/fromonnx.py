"""The staged ONNX file a derived format (ORT mobile, Triton) starts from: reused when the ONNX
format already wrote it in this export, else made here exactly as `--format onnx` makes it."""

from __future__ import annotations

from pathlib import Path


def staged_onnx(job, precision: str, say) -> Path:
    """Path of the staged `model.onnx` / `model.fp16.onnx` / `model.int8.onnx`."""
    from ..tables.artifacts import file_name
    from . import quantize
    from .onnx_graph import export_onnx

    path = job.staging / file_name("onnx", precision)
    if path.is_file():
        return path
    if precision == "fp32":
        say("ONNX fp32")
        export_onnx(job.model, job.example, path, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
    elif precision == "int8":
        base = staged_onnx(job, "fp32", say)
        say("ONNX int8 (calibrating)")
        quantize.build_int8(job, base)
    else:
        base = staged_onnx(job, "fp32", say)
        quantize.to_fp16(base, path, fp16_io=job.options["fp16_io"], meta=job.meta)
    return path
