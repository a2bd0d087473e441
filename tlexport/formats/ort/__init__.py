"""ONNX Runtime mobile: `.ort` files converted from the staged ONNX files, each with the
reduced-operator config a minimal onnxruntime build is compiled from."""

from ..onnx import INT8
from ..spec import File, FormatSpec

SPEC = FormatSpec(
    name="ort", package=__name__, suffix=".ort", built_from="onnx",
    description="ONNX Runtime mobile format + reduced-operator config",
    files=(File("fp32", "model.ort", companions=("model.required_operators.config",)),
           File("int8", "model.int8.ort", companions=("model.int8.required_operators.config",))),
    runtimes=(("onnxruntime", "cpu"),),
    int8=INT8,  # the int8 .ort is the int8 ONNX file converted
    options="OrtOptions",  # options.py: --ort-target
)
