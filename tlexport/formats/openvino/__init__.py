"""OpenVINO IR: `model.xml` (graph) + `model.bin` (weights), converted from tlexport's ONNX files."""

from ..onnx import INT8
from ..spec import File, FormatSpec, Requirement

SPEC = FormatSpec(
    name="openvino", package=__name__, suffix=".xml", extra="openvino", built_from="onnx",
    description="OpenVINO IR: model.xml (graph) + model.bin (weights)",
    files=tuple(File(p, f"model{s}.xml", companions=(f"model{s}.bin",))
                for p, s in (("fp32", ""), ("fp16", ".fp16"), ("int8", ".int8"))),
    runtimes=(("openvino", "cpu"),),
    provides=("openvino",),
    needs=(Requirement("openvino", "pip install -e '.[openvino]' (or pip install openvino)"),),
    int8=INT8,  # the int8 IR is the int8 ONNX file converted as is
    dynamic_size=True,  # converted from the staged ONNX files, whose height and width are then free
)
