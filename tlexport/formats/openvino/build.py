"""OpenVINO IR (`model.xml` + `model.bin`), converted from tlexport's own ONNX files.

fp32 and fp16 come from the fp32 ONNX (fp16: weights compressed to half; OpenVINO's CPU plugin
decides the compute precision). int8 is the accuracy-aware QDQ ONNX of the onnx format's int8
converted as is: the same calibration, the same float layers and the same held-out gate as
`model.int8.onnx` (its record is reused), and OpenVINO's low-precision transformations run its
Q/DQ pairs as int8 kernels. NNCF's post-training quantization would be a second calibration to
keep in step with the first (and a dependency with its own pins) for the same kind of graph.
"""

from __future__ import annotations

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
    """model.xml/.bin (fp32), model.fp16.xml/.bin, model.int8.xml/.bin for the asked precisions."""
    from ...tables.artifacts import kind

    out = []
    for precision in job.precisions:
        row = kind("openvino", precision)
        source = stage(job, "int8" if precision == "int8" else "fp32", say)
        say(f"OpenVINO IR {precision}")
        save_ir(source.path, job.staging / row.file, meta=job.meta, half=precision == "fp16")
        notes = []
        if precision == "int8":
            notes = [f"converted from the QDQ int8 ONNX; kept in float: {', '.join(source.int8['float_nodes']) or 'none'}"]
        elif precision == "fp16":
            notes = ["fp16 weights; OpenVINO picks the CPU compute precision"]
        out.append(Artifact(row.file, "openvino", precision, notes=notes, int8=source.int8))
    return out
