"""A minimal edge app: classify an image file or a folder with a tlexport ONNX model.

Needs only onnxruntime, numpy and Pillow - not torch, not tlexport. Everything it needs travels
inside the model file: class names (`tlexport.classes`) and preprocessing (`tlexport.preprocess`:
resize, crop, mean, std, interpolation) in the ONNX metadata.

    python examples/edge_app.py runs/my-run/export/model.onnx photos/
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def load_model(path):
    """Session, class names and preprocessing dict, all read from the model file."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return session, json.loads(meta["tlexport.classes"]), json.loads(meta["tlexport.preprocess"])


def preprocess(path, pre):
    """Resize the shorter side, centre-crop, scale to [0,1], normalise: float32 CHW (torchvision's
    Resize + CenterCrop + ToTensor + Normalize, with Pillow's antialiased resize)."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    short = pre["resize"]
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(size, FILTERS[pre.get("interpolation", "bilinear")])
    crop = pre["crop"]
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    x = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return x.transpose(2, 0, 1)


def classify(model_path, target, top_k=3):
    session, classes, pre = load_model(model_path)
    target = Path(target)
    files = sorted(p for p in target.rglob("*") if p.suffix.lower() in EXTENSIONS) if target.is_dir() else [target]
    name = session.get_inputs()[0].name
    for f in files:
        try:
            x = preprocess(f, pre)[None]
        except OSError as e:  # unreadable image: say so and carry on
            print(f"{f}: cannot read ({e})", file=sys.stderr)
            continue
        logits = session.run(None, {name: x})[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:top_k]
        print(f"{f}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in best))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_app.py MODEL.onnx IMAGE_OR_FOLDER")
    classify(sys.argv[1], sys.argv[2])
