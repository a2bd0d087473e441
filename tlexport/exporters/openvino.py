"""OpenVINO IR (`model.xml` + `model.bin`), converted from tlexport's own ONNX files.

fp32 and fp16 come from the fp32 ONNX (fp16: weights compressed to half; OpenVINO's CPU plugin
decides the compute precision). int8 is the accuracy-aware QDQ ONNX of `quantize.build_int8`
converted as is: the same calibration, the same float layers and the same held-out gate as
`model.int8.onnx`, and OpenVINO's low-precision transformations run its Q/DQ pairs as int8
kernels. NNCF's post-training quantization would be a second calibration to keep in step with
the first (and a dependency with its own pins) for the same kind of graph.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import ExportError, UsageError, first_line
from ..tables import metadata as md
from ..tables.extras import not_installed


def save_ir(src: Path, dst: Path, *, meta: dict, half: bool = False) -> None:
    """Convert an ONNX file to IR at `dst` (.xml; the .bin beside it), metadata in rt_info.

    Raises:
        ExportError: openvino is missing or the conversion fails.
    """
    try:
        import openvino as ov
    except ImportError:
        raise UsageError(not_installed("openvino", "--format openvino")) from None
    try:
        model = ov.convert_model(str(src))
        model.set_rt_info(md.to_json(meta), list(md.IR_RT_INFO))
        ov.save_model(model, str(dst), compress_to_fp16=half)
    except Exception as e:  # OpenVINO raises plain RuntimeError with long messages
        raise ExportError(f"OpenVINO conversion of {src.name} failed ({first_line(e, 300)})") from None


def _fp32_onnx(job, say) -> Path:
    """The staged fp32 ONNX when the onnx format was built first in this export, else our own."""
    from ..tables.artifacts import file_name
    from .onnx_graph import export_onnx

    staged = job.staging / file_name("onnx", "fp32")
    if staged.is_file():
        return staged
    own = _private(job) / staged.name
    if not own.is_file():
        say("ONNX fp32 (for OpenVINO)")
        export_onnx(job.model, job.example, own, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
    return own


def _int8_onnx(job, base: Path, say) -> tuple[Path, dict]:
    """The accuracy-aware int8 ONNX and its record: the one the onnx format made, else our own."""
    from ..tables.artifacts import file_name
    from .quantize import build_int8

    staged = job.staging / file_name("onnx", "int8")
    if staged.is_file() and job.options.get("_int8_record"):
        return staged, job.options["_int8_record"]
    say("int8 for OpenVINO (calibrating)")
    private = dataclasses.replace(job, staging=_private(job))
    art = build_int8(private, base)
    return private.staging / art.file, art.int8


def _private(job) -> Path:
    folder = job.staging / ".openvino"
    folder.mkdir(exist_ok=True)
    return folder


def build(job, say) -> tuple[list, list[str]]:
    """model.xml/.bin (fp32), model.fp16.xml/.bin, model.int8.xml/.bin for the asked precisions."""
    import shutil

    from ..tables.artifacts import kind
    from .job import Artifact

    try:  # the pipeline refused --format openvino without openvino before any work (tables.extras)
        base = _fp32_onnx(job, say)
        out = []
        for precision in job.precisions:
            row = kind("openvino", precision)
            say(f"OpenVINO IR {precision}")
            src, record, notes = base, None, []
            if precision == "int8":
                src, record = _int8_onnx(job, base, say)
                notes = [f"converted from the QDQ int8 ONNX; kept in float: {', '.join(record['float_nodes']) or 'none'}"]
            save_ir(src, job.staging / row.file, meta=job.meta, half=precision == "fp16")
            if precision == "fp16":
                notes = ["fp16 weights; OpenVINO picks the CPU compute precision"]
            out.append(Artifact(row.file, "openvino", precision, devices=["cpu"], notes=notes, int8=record))
    finally:
        shutil.rmtree(job.staging / ".openvino", ignore_errors=True)
    return out, []
