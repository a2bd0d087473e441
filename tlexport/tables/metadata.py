"""The metadata every artifact carries, so an app needs nothing but the model file: its fields,
the one validated schema every reader's result passes, and the dict an export embeds.

Each format package writes and reads it in its own way (`tlexport/formats/<name>/metadata.py`:
ONNX `metadata_props`, an extra file in TorchScript and .pt2 archives, an OpenVINO IR's rt_info,
a TFLite metadata entry, an ExecuTorch constant method); `tlexport.formats.metadata.read_metadata`
dispatches to them. Reading never executes anything from the file. Torch-free to import.
"""

from __future__ import annotations

import json
import math

from ..errors import ArtifactError

# The keys of the dict every reader returns (and `build_metadata` writes).
FIELDS = ("classes", "preprocess", "arch", "weights_sha256", "tlexport_version", "torch_version", "batch",
          "in_graph_preprocess")

# ---- the schema ---------------------------------------------------------------------------------
# Everything read from an artifact is input: these bounds keep a tampered file from asking for
# absurd work (a 10^9-pixel resize) or producing garbage (std 0 -> NaN, labels that are dicts).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
LAYOUTS = ("NCHW", "NHWC")
MAX_SIDE = 4096  # resize and crop, in pixels
MAX_CLASSES = 100_000
MAX_LABEL = 1000  # characters of one class name
MAX_BATCH = 65536
MIN_STD = 1e-6
TEXT_FIELDS = ("arch", "weights_sha256", "tlexport_version", "torch_version")


def _fail(source, field: str, problem: str):
    raise ArtifactError(f"{source}: metadata field '{field}' {problem}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_classes(classes, source="metadata") -> list[str]:
    """A list of 1..MAX_CLASSES distinct, non-empty strings."""
    if not isinstance(classes, list):
        _fail(source, "classes", f"must be a list of class names, not {type(classes).__name__}")
    if not 1 <= len(classes) <= MAX_CLASSES:
        _fail(source, "classes", f"must hold 1 to {MAX_CLASSES} names, not {len(classes)}")
    for i, c in enumerate(classes):
        if not isinstance(c, str):
            _fail(source, f"classes[{i}]", f"must be a string, not {type(c).__name__}")
        if not c or len(c) > MAX_LABEL:
            _fail(source, f"classes[{i}]", f"must be 1 to {MAX_LABEL} characters long")
    if len(set(classes)) != len(classes):
        dup = next(c for i, c in enumerate(classes) if c in classes[:i])
        _fail(source, "classes", f"names {dup!r} twice")
    return list(classes)


def _side(pre: dict, key: str, source) -> int:
    if key not in pre:
        _fail(source, f"preprocess.{key}", "is missing")
    v = pre[key]
    if not _is_int(v) or not 1 <= v <= MAX_SIDE:
        _fail(source, f"preprocess.{key}", f"must be an integer from 1 to {MAX_SIDE}, not {v!r}")
    return v


def _triple(pre: dict, key: str, source, positive: bool) -> list[float]:
    if key not in pre:
        _fail(source, f"preprocess.{key}", "is missing")
    v = pre[key]
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_number(x) for x in v):
        _fail(source, f"preprocess.{key}", f"must be 3 finite numbers (R, G, B), not {v!r}")
    if positive and min(v) < MIN_STD:
        _fail(source, f"preprocess.{key}", f"must be positive (>= {MIN_STD:g}), not {list(v)}")
    return [float(x) for x in v]


def check_preprocess(pre, source="metadata") -> dict:
    """The preprocessing dict, validated and normalised (interpolation defaults to bilinear).

    Raises:
        ArtifactError: one line naming the field (`preprocess.std`, ...).
    """
    if not isinstance(pre, dict):
        _fail(source, "preprocess", f"must be an object, not {type(pre).__name__}")
    resize, crop = _side(pre, "resize", source), _side(pre, "crop", source)
    if crop > resize:
        _fail(source, "preprocess.crop", f"({crop}) must not exceed preprocess.resize ({resize})")
    out = {"resize": resize, "crop": crop, "mean": _triple(pre, "mean", source, False),
           "std": _triple(pre, "std", source, True)}
    interp = pre.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        _fail(source, "preprocess.interpolation", f"must be one of {', '.join(INTERPOLATIONS)}, not {interp!r}")
    out["interpolation"] = interp
    if pre.get("color_order", "RGB") != "RGB":
        _fail(source, "preprocess.color_order", f"must be 'RGB', not {pre['color_order']!r}")
    if pre.get("layout", "NCHW") not in LAYOUTS:
        _fail(source, "preprocess.layout", f"must be one of {', '.join(LAYOUTS)}, not {pre['layout']!r}")
    vr = pre.get("value_range", [0.0, 1.0])
    if not isinstance(vr, (list, tuple)) or [x for x in vr if _is_number(x)] != [0, 1]:
        _fail(source, "preprocess.value_range", f"must be [0, 1], not {vr!r}")
    # the layout fields, checked above, stay in the result when the file states them
    out.update({k: (list(pre[k]) if k == "value_range" else pre[k])
                for k in ("color_order", "layout", "value_range") if k in pre})
    return out


def check_batch(batch, source="metadata"):
    """"dynamic" or a fixed batch size 1..MAX_BATCH."""
    if batch == "dynamic" or batch is None:
        return "dynamic"
    if not _is_int(batch) or not 1 <= batch <= MAX_BATCH:
        _fail(source, "batch", f"must be 'dynamic' or an integer from 1 to {MAX_BATCH}, not {batch!r}")
    return batch


def validate(meta, source="metadata") -> dict:
    """Validate every field present (missing ones stay missing; see `require`).

    Returns:
        a new dict with the normalised values.
    Raises:
        ArtifactError: one line naming the source and the field.
    """
    if not isinstance(meta, dict):
        raise ArtifactError(f"{source}: metadata must be an object, not {type(meta).__name__}")
    out = dict(meta)
    if "classes" in meta:
        out["classes"] = check_classes(meta["classes"], source)
    if "preprocess" in meta:
        out["preprocess"] = check_preprocess(meta["preprocess"], source)
    if "batch" in meta:
        out["batch"] = check_batch(meta["batch"], source)
    if "in_graph_preprocess" in meta and not isinstance(meta["in_graph_preprocess"], bool):
        _fail(source, "in_graph_preprocess", "must be true or false")
    for key in TEXT_FIELDS:
        if key in meta and not (isinstance(meta[key], str) and len(meta[key]) <= 200):
            _fail(source, key, "must be a string of at most 200 characters")
    return out


def require(meta: dict, source, fields=("classes", "preprocess")) -> dict:
    """`meta` (already validated) holding every field in `fields`.

    Raises:
        ArtifactError: a missing field; an artifact without any tlexport metadata says so.
    """
    if not any(f in meta for f in FIELDS):
        raise ArtifactError(f"{source} carries no tlexport metadata (labels, preprocessing); "
                            "export it with `tlexport export`")
    for f in fields:
        if f not in meta:
            _fail(source, f, "is missing")
    return meta


def check_output_width(meta: dict | None, width: int, source) -> None:
    """The class count must equal the model's output width (once a run shows the width).

    Raises:
        ArtifactError: naming both numbers.
    """
    classes = (meta or {}).get("classes")
    if classes is not None and len(classes) != width:
        _fail(source, "classes", f"lists {len(classes)} names but the model outputs {width} logits")


def build_metadata(run, weights_sha256: str, batch: int | None = None) -> dict:
    """The metadata dict for a run (same keys that `read_metadata` returns).

    Args:
        run: a `tlexport.models.Run`.
        weights_sha256: sha256 of the weights file the artifact was made from.
        batch: the fixed batch size of the graph, or None for a free batch dimension.
    Returns:
        {"classes", "preprocess", "arch", "weights_sha256", "tlexport_version", "torch_version",
         "batch": "dynamic" | int}
    """
    import torch

    from .. import __version__

    return {
        "classes": run.classes,
        "preprocess": run.preprocess.to_dict(),
        "arch": run.arch,
        "weights_sha256": weights_sha256,
        "tlexport_version": __version__,
        "torch_version": torch.__version__,
        "batch": batch if batch else "dynamic",
    }


def to_json(meta: dict) -> str:
    """The `tlexport.json` archive entry."""
    return json.dumps(meta, sort_keys=True)
