"""OpenVINO IR: `model.xml` (graph) + `model.bin` (weights), converted from tlexport's ONNX files."""

from ..spec import CALIB_METHODS, File, FormatSpec, Int8Support, Requirement

# minmax (also the default): NNCF's post-training quantization of the fp32 IR where nncf is
# installed, else the int8 ONNX file converted; percentile and entropy (onnxruntime's calibrators)
# convert the int8 ONNX file. Per-layer fallback either way (NNCF's ignored_scope).
INT8 = Int8Support(calib_methods=CALIB_METHODS, default_method="minmax", per_layer=True)

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
