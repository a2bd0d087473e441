"""web: a static folder that classifies images in the browser with onnxruntime-web (WebGPU where
the browser has it, wasm otherwise): index.html, a small ES-module script (no build step), the
ONNX model, labels.json, onnxruntime-web's files and a README saying how to serve it. Its runtime,
`browser`, runs models inside headless Chromium; it also runs the `onnx` format's files."""

from ..onnx import INT8
from ..spec import File, FormatSpec

SPEC = FormatSpec(
    name="web", package=__name__, suffix=".web", folder=True, built_from="onnx",
    description="static web page classifying in the browser (onnxruntime-web, WebGPU or wasm)",
    files=(File("fp32", "model.web"), File("int8", "model.int8.web")),
    runtimes=(("browser", "cpu"),), provides=("browser",),
    int8=INT8,  # the page runs the int8 ONNX file of the same export
)
