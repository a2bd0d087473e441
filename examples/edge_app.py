"""A minimal edge app: classify an image file or a folder with a tlexport ONNX model.

Needs only onnxruntime, numpy and Pillow - not torch, not tlexport. Everything it needs travels
inside the model file: class names (`tlexport.classes`) and preprocessing (`tlexport.preprocess`:
resize, crop, mean, std, interpolation) in the ONNX metadata.

The metadata is input like any file: it is checked with the same rules tlexport applies
(tlexport/tables/metadata.py and tlexport/formats/onnx/metadata.py; kept as a short copy here so the app needs nothing but the model),
and a bad field stops the app with one line naming it.

    python examples/edge_app.py runs/my-run/export/model.onnx photos/
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
MAX_SIDE, MAX_CLASSES, MIN_STD = 4096, 100_000, 1e-6
MAX_RESIZED_PIXELS, MAX_ASPECT = 16 * 1024 * 1024, 4  # bound on the work of one resize


class BadModel(Exception):
    """The model file's metadata is missing or breaks the rules (message names the field)."""


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_metadata(classes, pre, width):
    """The rules of tlexport's metadata schema: raise BadModel naming the first bad field."""
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise BadModel("metadata field 'classes' must be a list of 1 or more class names")
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c:
            raise BadModel(f"metadata field 'classes[{i}]' must be a non-empty string")
    if len(set(classes)) != len(classes):
        raise BadModel("metadata field 'classes' names a class twice")
    if width is not None and len(classes) != width:
        raise BadModel(f"metadata field 'classes' lists {len(classes)} names but the model outputs {width} logits")
    if not isinstance(pre, dict):
        raise BadModel("metadata field 'preprocess' must be an object")
    for key in ("resize", "crop"):
        v = pre.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIDE:
            raise BadModel(f"metadata field 'preprocess.{key}' must be an integer from 1 to {MAX_SIDE}, not {v!r}")
    if pre["crop"] > pre["resize"]:
        raise BadModel("metadata field 'preprocess.crop' must not exceed preprocess.resize")
    for key in ("mean", "std"):
        v = pre.get(key)
        if not isinstance(v, list) or len(v) != 3 or not all(_number(x) for x in v):
            raise BadModel(f"metadata field 'preprocess.{key}' must be 3 finite numbers, not {v!r}")
    if min(pre["std"]) < MIN_STD:
        raise BadModel(f"metadata field 'preprocess.std' must be positive, not {pre['std']}")
    if pre.get("interpolation", "bilinear") not in FILTERS:
        raise BadModel(f"metadata field 'preprocess.interpolation' must be one of {', '.join(FILTERS)}")


def load_model(path):
    """Session, class names and preprocessing dict, all read from the model file and checked."""
    import onnxruntime as ort  # here, so the LiteRT and ExecuTorch examples can share the rest without it

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    values = []
    for key in ("tlexport.classes", "tlexport.preprocess"):
        if key not in meta:
            raise BadModel(f"metadata field '{key}' is missing (export the model with tlexport)")
        try:
            values.append(json.loads(meta[key]))
        except ValueError:
            raise BadModel(f"metadata field '{key}' is not valid JSON") from None
    classes, pre = values
    width = session.get_outputs()[0].shape[-1]
    check_metadata(classes, pre, width if isinstance(width, int) else None)
    return session, classes, pre


def resized_size(w, h, short):
    return (short, int(short * h / w)) if w <= h else (int(short * w / h), short)


def preprocess(path, pre):
    """Resize the shorter side, centre-crop, scale to [0,1], normalise: float32 CHW (torchvision's
    Resize + CenterCrop + ToTensor + Normalize, with Pillow's antialiased resize)."""
    with Image.open(path) as im:
        size = resized_size(im.width, im.height, pre["resize"])
        if size[0] * size[1] > max(MAX_RESIZED_PIXELS, MAX_ASPECT * pre["resize"] ** 2):  # header only
            raise ValueError(f"extreme aspect ratio: {im.width}x{im.height} would be resized to {size[0]}x{size[1]}")
        img = ImageOps.exif_transpose(im).convert("RGB")
    size = resized_size(*img.size, pre["resize"])
    img = img.resize(size, FILTERS[pre.get("interpolation", "bilinear")])
    crop = pre["crop"]
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    x = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return x.transpose(2, 0, 1)


def classify_files(target, classes, pre, infer, top_k=3):
    """Classify an image file or every image in a folder: `infer` maps one preprocessed float32
    NCHW batch of 1 to its logits; prints the top-k labels per image. The LiteRT and ExecuTorch
    examples call it with their own runtime."""
    target = Path(target)
    files = sorted(p for p in target.rglob("*") if p.suffix.lower() in EXTENSIONS) if target.is_dir() else [target]
    for f in files:
        try:
            x = preprocess(f, pre)[None]
        except (OSError, ValueError, MemoryError, Image.DecompressionBombError) as e:  # say so, carry on
            print(f"{f}: cannot read ({e})", file=sys.stderr)
            continue
        logits = np.asarray(infer(x), dtype=np.float64).reshape(-1)
        if logits.shape[0] != len(classes):
            raise BadModel(f"metadata field 'classes' lists {len(classes)} names but the model outputs {logits.shape[0]} logits")
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:top_k]
        print(f"{f}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in best))


def classify(model_path, target, top_k=3):
    session, classes, pre = load_model(model_path)
    name = session.get_inputs()[0].name
    classify_files(target, classes, pre, lambda x: session.run(None, {name: x})[0][0], top_k)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_app.py MODEL.onnx IMAGE_OR_FOLDER")
    try:
        classify(sys.argv[1], sys.argv[2])
    except BadModel as e:
        sys.exit(f"Error: {sys.argv[1]}: {e}")
