"""The ONNX files of one export, staged once and shared: `--format onnx` publishes them, and
every format converted from ONNX (OpenVINO, ORT mobile, Triton, or a new one with
`built_from="onnx"`) starts from the same `model.onnx` / `model.fp16.onnx` / `model.int8.onnx`,
made here exactly as `--format onnx` makes them, with the same int8 record."""

from __future__ import annotations

from ...exporters.job import Staged


def stage(job, precision: str, say) -> Staged:
    """The staged ONNX file of `precision` (made now unless this export already made it)."""
    from ...errors import ExportError
    from ..files import file_name

    key = ("onnx", precision)
    if key not in job.staged:
        path = job.staging / file_name("onnx", precision)
        try:
            job.staged[key] = _make(job, precision, path, say)
        except ExportError as e:  # one attempt per export: OpenVINO, ORT and Triton share it
            job.staged[key] = Staged(path, error=str(e))
    staged = job.staged[key]
    if staged.error:
        raise ExportError(staged.error)
    return staged


def _make(job, precision: str, path, say) -> Staged:
    from . import quantize
    from .graph import check_finite, export_onnx

    if precision == "fp32":
        check_finite(job.model, job.example)
        say("ONNX fp32")
        # Traced on the CPU: an ONNX graph does not depend on the tracing device.
        export_onnx(job.model, job.example, path, opset=job.settings["opset"], dynamic=job.dynamic, meta=job.meta,
                    size=job.dynamic_size)
        staged = Staged(path)
    elif precision == "int8":
        base = stage(job, "fp32", say).path
        say("ONNX int8")
        record, notes = quantize.build_int8(job, base, path)
        staged = Staged(path, int8=record, notes=notes)
    else:
        base = stage(job, "fp32", say).path
        say("ONNX fp16")
        fp16_io = job.options.of("onnx").fp16_io
        quantize.to_fp16(base, path, fp16_io=fp16_io, meta=job.meta)
        staged = Staged(path, notes=["fp16 input/output" if fp16_io else "float32 input/output"])
    return staged
