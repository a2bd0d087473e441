"""Classify images with a tlexport LiteRT model (`model.tflite` / `model.int8.tflite`) in the
LiteRT interpreter - what an Android or embedded Linux app runs.

Needs only ai-edge-litert, numpy and Pillow (`pip install ai-edge-litert==2.3.0`), not torch; images
are decoded and preprocessed by tlexport's own one-file module, through edge_app.py. The labels and the preprocessing travel inside the .tflite as a metadata entry named
`tlexport.json`. int8 files take and return int8 tensors: the input is quantized and the output
dequantized with the tensors' own scale and zero point; a channels-last (NHWC) input is fed NHWC.

    python examples/edge_litert.py runs/my-run/export/model.tflite photos/

Which file to ship to a device: the one `tlexport parity --on TARGET` verified there and
`tlexport bench --on TARGET` timed fastest there; bench prints it ("the fastest verified file
there") and manifest.json keeps it as `devices[KEY].fastest` (docs/devices.md). The exporting
machine's fastest file may not be the board's: int8 that is 3x faster on a VNNI server may not be
on an ARM core without dot-product instructions.
"""

import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from edge_app import BadModel, check_metadata, classify_files, open_model  # the ONNX example's checks and loop


def read_metadata(path):
    """The `tlexport.json` entry of the flatbuffer's metadata list."""
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == "tlexport.json":
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    raise BadModel("it carries no tlexport metadata (export it with tlexport)")


def run(interpreter, x):
    """One image (float32 NCHW, batch 1) -> float32 logits."""
    inp = interpreter.get_input_details()[0]
    if list(inp["shape"][1:]) != list(x.shape[1:]) and inp["shape"][-1] == 3:
        x = x.transpose(0, 2, 3, 1)  # the file wants channels-last
    if list(inp["shape"]) != list(x.shape):
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    y = interpreter.get_tensor(out["index"]).astype(np.float64)
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
    return y


def classify(model_path, target, top_k=3):
    meta = open_model(model_path, (".tflite",), read_metadata)
    check_metadata(meta.get("classes"), meta.get("preprocess"), None)
    interpreter = open_model(model_path, (".tflite",), lambda p: Interpreter(model_path=str(p)))
    classify_files(target, meta["classes"], meta["preprocess"], lambda x: run(interpreter, x)[0], top_k)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_litert.py MODEL.tflite IMAGE_OR_FOLDER")
    try:
        classify(sys.argv[1], sys.argv[2])
    except BadModel as e:
        sys.exit(f"Error: {sys.argv[1]}: {e}")
