"""ONNX: one self-contained `.onnx` file from torch's dynamo exporter, with fp16, int8 (QDQ,
accuracy-aware) and in-graph preprocessing (one decoded uint8 image in) variants; run by
onnxruntime (its execution providers are rows of data), OpenVINO and OpenCV's DNN. The ONNX graph
helpers and quantization here are also what OpenVINO, ORT mobile and Triton are converted from."""

from ..spec import BAKED, CALIB_METHODS, File, FormatSpec, Int8Support

# onnxruntime's static quantization: its three calibrators, and per-node exclusion. The formats
# converted from the int8 ONNX file (OpenVINO, ORT mobile, Triton) share it.
INT8 = Int8Support(calib_methods=CALIB_METHODS, default_method="minmax", per_layer=True)

SPEC = FormatSpec(
    name="onnx", package=__name__, suffix=".onnx", in_all=True,
    description="ONNX (dynamo exporter), one self-contained file",
    files=(File("fp32", "model.onnx"), File("fp16", "model.fp16.onnx"), File("int8", "model.int8.onnx"),
           File("fp32", "model.uint8.onnx", role=BAKED)),
    runtimes=(("onnxruntime", "cpu"), ("onnxruntime-cuda", "cuda"), ("onnxruntime-tensorrt", "cuda"),
              ("openvino", "cpu"), ("opencv", "cpu"), ("browser", "cpu")),
    provides=("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "opencv"),
    int8=INT8,
    dynamic_size=True,
    options="OnnxOptions",  # options.py: --opset, --target, --fp16-io, --bake-preprocess
)
