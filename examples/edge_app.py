"""A minimal edge app: classify an image file or a folder with a tlexport ONNX model.

Needs onnxruntime, numpy and Pillow - not torch. Everything model-specific travels inside the
model file: class names (`tlexport.classes`) and preprocessing (`tlexport.preprocess`: resize,
crop, mean, std, interpolation) in the ONNX metadata. Decoding and preprocessing are tlexport's
own (tlexport/data/images.py: every image mode, EXIF orientation, the reduced JPEG decode, the
resize and crop), so the app sees exactly the pixels training and `tlexport predict` saw. That
module needs only Pillow and numpy: an app that does not install tlexport copies the one file
next to itself.

The metadata is input like any file: it is checked with the same rules tlexport applies
(tlexport/tables/metadata.py and tlexport/formats/onnx/metadata.py; kept as a short copy here so the app needs nothing but the model),
and a bad field stops the app with one line naming it.

    python examples/edge_app.py runs/my-run/export/model.onnx photos/
"""

import json
import math
import sys

import numpy as np

try:
    from tlexport.data import images  # tlexport installed
except ImportError:  # the file copied next to this app
    import images

MAX_SIDE, MAX_CLASSES, MIN_STD = 4096, 100_000, 1e-6


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
    if pre.get("interpolation", "bilinear") not in images.INTERPOLATIONS:
        raise BadModel("metadata field 'preprocess.interpolation' must be one of "
                       + ", ".join(images.INTERPOLATIONS))


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


def probabilities(files, classes, pre, infer):
    """Yield (file, class probabilities) for each file that can be read, or (file, reason) for
    one that cannot: `infer` maps one preprocessed float32 NCHW batch of 1 to its logits. The
    LiteRT and ExecuTorch examples call it with their own runtime."""
    for f in files:
        try:
            x = images.load_input(f, pre)[None]  # decode, resize, crop, normalise: as tlexport does
        except images.BadImage as e:
            yield f, str(e)
            continue
        logits = np.asarray(infer(x), dtype=np.float64).reshape(-1)
        if logits.shape[0] != len(classes):
            raise BadModel(f"metadata field 'classes' lists {len(classes)} names but the model outputs {logits.shape[0]} logits")
        probs = np.exp(logits - logits.max())
        yield f, probs / probs.sum()


def classify_files(target, classes, pre, infer, top_k=3):
    """Print the top-k labels of an image file or of every image in a folder (a file that cannot
    be read is named on stderr and the others go on)."""
    for f, probs in probabilities(images.iter_image_files([target]), classes, pre, infer):
        if isinstance(probs, str):
            print(f"{f}: cannot read ({probs})", file=sys.stderr)
            continue
        best = np.argsort(-probs, kind="stable")[:top_k]
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
