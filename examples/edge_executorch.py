"""Classify images with a tlexport ExecuTorch program (`model.pte` / `model.int8.pte`), using
ExecuTorch's Python runtime - the same program a phone or board runs through its C++ runtime.

Needs executorch (`pip install --no-deps executorch==1.5.1` plus tlexport's `edge` extra), torch,
numpy and Pillow; not tlexport. The labels and the preprocessing travel inside the .pte: the
program has a constant method `tlexport_metadata` that returns them as JSON.

    python examples/edge_executorch.py runs/my-run/export/model.pte photos/
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch  # ExecuTorch's extension module needs torch's libraries loaded first
from edge_app import EXTENSIONS, preprocess  # the same resize/crop/normalise as the ONNX example
from executorch.runtime import Runtime


def load_model(path):
    """forward method, class names, preprocessing dict and the largest batch the program takes."""
    program = Runtime.get().load_program(str(path))
    meta = json.loads(program.load_method("tlexport_metadata").execute([])[0])
    forward = program.load_method("forward")
    return forward, meta["classes"], meta["preprocess"]


def classify(model_path, target, top_k=3):
    forward, classes, pre = load_model(model_path)
    target = Path(target)
    files = sorted(p for p in target.rglob("*") if p.suffix.lower() in EXTENSIONS) if target.is_dir() else [target]
    for f in files:
        try:
            x = preprocess(f, pre)[None]
        except OSError as e:  # unreadable image: say so and carry on
            print(f"{f}: cannot read ({e})", file=sys.stderr)
            continue
        logits = forward.execute([torch.from_numpy(np.ascontiguousarray(x))])[0][0].double().numpy()
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:top_k]
        print(f"{f}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in best))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_executorch.py MODEL.pte IMAGE_OR_FOLDER")
    classify(sys.argv[1], sys.argv[2])
