"""LiteRT / TFLite: a `.tflite` flatbuffer via litert-torch (Android, microcontrollers)."""

from ..spec import File, FormatSpec, Int8Support, Requirement

SPEC = FormatSpec(
    name="tflite", package=__name__, suffix=".tflite", extra="tflite",
    description="LiteRT / TFLite flatbuffer via litert-torch (Android, microcontrollers)",
    files=(File("fp32", "model.tflite"), File("int8", "model.int8.tflite")),
    runtimes=(("litert", "cpu"),),
    provides=("litert",),
    needs=(Requirement("litert_torch", "pip install -e '.[tflite]' (or pip install litert-torch==0.10.0)"),
           Requirement("ai_edge_litert", "pip install -e '.[tflite]' (or pip install ai-edge-litert==2.3.0)")),
    int8=Int8Support(calib_methods=("minmax",), default_method="histogram (litert-torch's PT2E observer)",
                     per_layer=False, why="litert-torch's quantizer cannot keep a layer in float"),
)
