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

It also runs `model.uint8.onnx` (`tlexport export --bake-preprocess`, docs/deploy.md): that model
takes the decoded image itself (uint8 [H, W, 3], RGB, any size) and resizes, crops and normalises
inside the graph, so the app only decodes. Any other input this app cannot feed is refused in one
line.

Which file to ship to a device: the one `tlexport parity --on TARGET` verified there and
`tlexport bench --on TARGET` timed fastest there; bench prints it ("the fastest verified file
there") and manifest.json keeps it as `devices[KEY].fastest` (docs/devices.md). The exporting
machine's fastest file may not be the board's: int8 that is 3x faster on a VNNI server may not be
on an ARM core without dot-product instructions.
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
    """The model file cannot be used: not there, not loadable by the runtime, or its metadata is
    missing or breaks the rules (the message names the field)."""


def open_model(path, suffixes, load):
    """`load(path)` for a model file of one of `suffixes`; BadModel in one line instead of the
    runtime's traceback when the file is missing, of another kind, or the runtime refuses it."""
    import os

    if not os.path.isfile(path) and not os.path.isdir(path):
        raise BadModel("no such model file")
    if not str(path).endswith(tuple(suffixes)):
        raise BadModel(f"this app runs {' or '.join(suffixes)} files")
    try:
        return load(path)
    except BadModel:
        raise
    except Exception as e:  # the runtime's own exception types differ; any is a file it cannot load
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadModel(f"the runtime cannot load it ({first[:200]})") from None


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

    session = open_model(path, (".onnx", ".ort"),
                         lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]))
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


def model_input(f, pre):
    """decode, resize, crop, normalise: as tlexport does -> float32 NCHW, batch 1."""
    return images.load_input(f, pre)[None]


def decoded(f, pre):
    """decode only (EXIF orientation, any mode to RGB) -> uint8 HWC: for model.uint8.onnx, which
    does the rest in its graph. The size is bounded like tlexport's own resize input."""
    img = images.load_rgb(f, check_size=lambda w, h: images.check_resize(w, h, pre["resize"]))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def probabilities(files, classes, pre, infer, load=model_input):
    """Yield (file, class probabilities) for each file that can be read, or (file, reason) for
    one that cannot: `infer` maps `load(file, pre)` (default: one preprocessed float32 NCHW batch
    of 1) to its logits. The LiteRT and ExecuTorch examples call it with their own runtime."""
    for f in files:
        try:
            x = load(f, pre)
        except images.BadImage as e:
            yield f, str(e)
            continue
        logits = np.asarray(infer(x), dtype=np.float64).reshape(-1)
        if logits.shape[0] != len(classes):
            raise BadModel(f"metadata field 'classes' lists {len(classes)} names but the model outputs {logits.shape[0]} logits")
        probs = np.exp(logits - logits.max())
        yield f, probs / probs.sum()


def classify_files(target, classes, pre, infer, top_k=3, load=model_input):
    """Print the top-k labels of an image file or of every image in a folder (a file that cannot
    be read is named on stderr and the others go on)."""
    for f, probs in probabilities(images.iter_image_files([target]), classes, pre, infer, load):
        if isinstance(probs, str):
            print(f"{f}: cannot read ({probs})", file=sys.stderr)
            continue
        best = np.argsort(-probs, kind="stable")[:top_k]
        print(f"{f}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in best))


def input_kind(session):
    """"image" for a float NCHW input (tlexport's usual models), "decoded" for model.uint8.onnx's
    uint8 [H, W, 3]; BadModel for an input this app cannot feed."""
    (inp,) = session.get_inputs() if len(session.get_inputs()) == 1 else (None,)
    if inp is None:
        raise BadModel(f"the model takes {len(session.get_inputs())} inputs; this app feeds one image")
    if inp.type in ("tensor(float)", "tensor(float16)") and len(inp.shape) == 4:
        return "image"
    if inp.type == "tensor(uint8)" and len(inp.shape) == 3 and inp.shape[-1] == 3:
        return "decoded"
    raise BadModel(f"input '{inp.name}' is {inp.type} {inp.shape}: this app feeds float32 [N, 3, H, W] "
                   "(model.onnx) or one decoded uint8 [H, W, 3] image (model.uint8.onnx)")


def classify(model_path, target, top_k=3):
    session, classes, pre = load_model(model_path)
    inp = session.get_inputs()[0]
    kind = input_kind(session)
    half = inp.type == "tensor(float16)"  # model.fp16.onnx exported with --fp16-io

    def infer(x):
        return session.run(None, {inp.name: x.astype(np.float16) if half else x})[0][0]

    classify_files(target, classes, pre, infer, top_k, decoded if kind == "decoded" else model_input)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python edge_app.py MODEL.onnx IMAGE_OR_FOLDER")
    try:
        classify(sys.argv[1], sys.argv[2])
    except BadModel as e:
        sys.exit(f"Error: {sys.argv[1]}: {e}")
