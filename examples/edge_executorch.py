"""Classify images with a tlexport ExecuTorch program (`model.pte` / `model.int8.pte`), using
ExecuTorch's Python runtime - the same program a phone or board runs through its C++ runtime.

Needs executorch (`pip install --no-deps executorch==1.5.1` plus tlexport's `edge` extra), torch,
numpy and Pillow; images are decoded and preprocessed by tlexport's own one-file module, through
edge_app.py. The labels and the preprocessing travel inside the .pte: the
program has a constant method `tlexport_metadata` that returns them as JSON.

    python examples/edge_executorch.py runs/my-run/export/model.pte photos/
"""

import json
import sys

import numpy as np
import torch  # ExecuTorch's extension module needs torch's libraries loaded first
from edge_app import BadModel, check_metadata, classify_files, open_model  # the ONNX example's checks and loop
from executorch.runtime import Runtime


def load_model(path):
    """forward method, class names and preprocessing dict (checked like the ONNX example's)."""
    program = open_model(path, (".pte",), lambda p: Runtime.get().load_program(str(p)))
    try:
        meta = json.loads(program.load_method("tlexport_metadata").execute([])[0])
    except Exception:  # no such method, or not JSON: not a tlexport program
        raise BadModel("it carries no tlexport metadata (export it with tlexport)") from None
    check_metadata(meta.get("classes"), meta.get("preprocess"), None)
    return program.load_method("forward"), meta["classes"], meta["preprocess"]


def classify(model_path, target, top_k=3):
    forward, classes, pre = load_model(model_path)
    classify_files(target, classes, pre,
                   lambda x: forward.execute([torch.from_numpy(np.ascontiguousarray(x))])[0][0].double().numpy(), top_k)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_executorch.py MODEL.pte IMAGE_OR_FOLDER")
    try:
        classify(sys.argv[1], sys.argv[2])
    except BadModel as e:
        sys.exit(f"Error: {sys.argv[1]}: {e}")
