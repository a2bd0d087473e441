"""ONNX Runtime mobile: `model.ort` / `model.int8.ort` converted from the staged ONNX files with
onnxruntime's own converter, each with the reduced-operator config a custom (minimal) mobile
build of onnxruntime is compiled from. The ONNX metadata_props survive the conversion."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...errors import ExportError, first_line
from ...exporters.job import Artifact
from ..onnx.stage import stage


def to_ort(src: Path, dst: Path, config: Path, target: str = "portable") -> None:
    """Convert one ONNX file with fixed (saved) optimizations: portable ones, or with "amd64" also
    onnxruntime's x86 NCHWc layout (see `options.OrtOptions`). An `.ort` file is not optimized
    again when it is loaded, so what is saved here is what runs.

    Raises:
        ExportError: the converter failed or wrote no .ort file.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    from ...runtimes.quiet import silenced

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        tmp = Path(tmp)
        try:
            with silenced():  # the converter prints and logs its progress
                convert_onnx_models_to_ort(src, output_dir=tmp, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform="amd64" if target == "amd64" else None,
                                           enable_type_reduction=False)
        except Exception as e:
            raise ExportError(f"ORT conversion of {src.name} failed ({first_line(e, 300)})") from None
        orts, configs = list(tmp.glob("*.ort")), list(tmp.glob("*.config"))
        if len(orts) != 1 or len(configs) != 1:
            raise ExportError(f"ORT conversion of {src.name} wrote {[p.name for p in tmp.iterdir()]}")
        os.replace(orts[0], dst)
        os.replace(configs[0], config)


def build(job, say) -> list[Artifact]:
    """model.ort (+ model.required_operators.config) or its int8 twin: the precision it is handed."""
    from ..files import kind
    from ..onnx.graph import io_spec, opset_of

    precision = job.precision
    source = stage(job, precision, say)
    row = kind("ort", precision)
    say(f"ORT mobile {precision}")
    target = job.options.of("ort").target
    to_ort(source.path, job.staging / row.file, job.staging / row.companions[0], target)
    inputs, outputs = io_spec(source.path)
    return [Artifact(row.file, "ort", precision, opset=opset_of(source.path), inputs=inputs, outputs=outputs,
                     int8=source.int8, notes=[
        f"from {source.path.name}; {row.companions[0]} lists the operators a reduced onnxruntime build needs "
        "(tools/ci_build/build.py --minimal_build --include_ops_by_config)", target_note(target)])]


def target_note(target: str) -> str:
    """What the saved optimizations mean for where the file runs, and how fast."""
    if target != "amd64":
        return ("portable optimizations (any CPU build of onnxruntime, ARM included); without onnxruntime's x86 "
                "NCHWc layout, which an .ort file cannot apply at load, fp32 runs slower than the .onnx on x86 "
                "(0.4x on mobilenet_v3_large, docs/int8-speed.md): --ort-target amd64 saves it")
    from ...envinfo import cpu_flags

    width = 16 if "avx512f" in cpu_flags() else 8
    return (f"x86 NCHWc layout saved for {width}-channel blocks (this CPU: {'AVX-512' if width == 16 else 'AVX2'}): "
            f"loads only on x86 CPUs with the same vector width, never on ARM")
