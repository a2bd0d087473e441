"""OpenVINO IR (`model.xml` + `model.bin`), converted from tlexport's own ONNX files.

fp32 and fp16 come from the fp32 ONNX (fp16: weights compressed to half; OpenVINO's CPU plugin
decides the compute precision). int8, where `nncf` is installed (the openvino extra installs it)
and `--calib-method` is minmax or not given, is NNCF's post-training quantization of the fp32 IR
under the shared `--int8-fallback` policy, gated on OpenVINO (`quantize.py` says why: on
depthwise/hardswish networks the converted QDQ graph ran slower than fp32). Otherwise it is the
accuracy-aware QDQ ONNX of the onnx format's int8 converted as is: the same calibration, the same
float layers and the same held-out gate as `model.int8.onnx` (its record is reused).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ...errors import ExportError, UsageError, first_line
from ...exporters.job import Artifact
from ...tables.extras import not_installed
from ...tables.metadata import to_json
from ..onnx.stage import stage
from .metadata import IR_RT_INFO


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
        model.set_rt_info(to_json(meta), list(IR_RT_INFO))
        ov.save_model(model, str(dst), compress_to_fp16=half)
    except Exception as e:  # OpenVINO raises plain RuntimeError with long messages
        raise ExportError(f"OpenVINO conversion of {src.name} failed ({first_line(e, 300)})") from None


def build(job, say) -> list[Artifact]:
    """model.xml/.bin (fp32), model.fp16.xml/.bin or model.int8.xml/.bin: the precision it is handed."""
    from ..files import kind

    from .quantize import nncf_method, quantized_share

    precision = job.precision
    row = kind("openvino", precision)
    if precision == "int8" and nncf_method(job.options.int8.calibration.method_for("openvino")):
        return [_nncf_int8(job, job.staging / row.file, say)]
    source = stage(job, "int8" if precision == "int8" else "fp32", say)
    say(f"OpenVINO IR {precision}")
    save_ir(source.path, job.staging / row.file, meta=job.meta, half=precision == "fp16")
    notes, record = [], source.int8
    if precision == "int8":
        notes = [f"converted from the QDQ int8 ONNX; kept in float: {', '.join(source.int8['float_nodes']) or 'none'}"]
        record = {**source.int8, **quantized_share(job.staging / row.file)}
    elif precision == "fp16":
        notes = ["fp16 weights; OpenVINO picks the CPU compute precision"]
    return [Artifact(row.file, "openvino", precision, notes=notes, int8=record)]


def _nncf_int8(job, dst: Path, say) -> Artifact:
    """model.int8.xml/.bin by NNCF from the fp32 IR (converted privately from the staged fp32 ONNX)."""
    from .quantize import build_int8

    source = stage(job, "fp32", say)
    fp32_ir = job.staging / ".openvino-fp32" / "model.xml"
    fp32_ir.parent.mkdir(exist_ok=True)
    try:
        save_ir(source.path, fp32_ir, meta=job.meta)
        say("OpenVINO IR int8 (NNCF)")
        record, notes = build_int8(job, source.path, fp32_ir, dst)
    finally:
        shutil.rmtree(fp32_ir.parent, ignore_errors=True)
    return Artifact(dst.name, "openvino", "int8", notes=notes, int8=record)
