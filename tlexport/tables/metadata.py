"""The metadata every artifact carries, so an app needs nothing but the model file.

Written into ONNX `metadata_props` (keys `tlexport.*`, also kept by the `.ort` conversion), into a
`tlexport.json` extra file inside TorchScript and .pt2 zip archives, into an OpenVINO IR's runtime
info (`rt_info`, path `tlexport/metadata`, the same JSON), as a TFLite metadata entry
`tlexport.json`, and as an ExecuTorch constant method `tlexport_metadata` returning the same JSON.
Reading never executes anything: ONNX is parsed with the `onnx` package (torch-free), the archives
are opened with `zipfile`, the IR's XML with the standard library (no openvino needed), `.ort`
metadata comes from onnxruntime's model metadata and `.tflite` from its flatbuffer (ai-edge-litert's
schema, torch-free); `.pte` asks ExecuTorch's runtime for the constant (it imports torch:
ExecuTorch's runtime needs it).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from ..errors import ArtifactError, UsageError, first_line
from .extras import not_installed

EXTRA_FILE = "tlexport.json"
TFLITE_ENTRY = "tlexport.json"  # name of the TFLite Model.metadata entry
PTE_METHOD = "tlexport_metadata"  # ExecuTorch constant method returning the JSON
# ONNX metadata_props keys -> keys of the dict read_metadata returns.
ONNX_KEYS = {
    "tlexport.classes": "classes",
    "tlexport.preprocess": "preprocess",
    "tlexport.arch": "arch",
    "tlexport.weights_sha256": "weights_sha256",
    "tlexport.version": "tlexport_version",
    "torch.version": "torch_version",
    "tlexport.batch": "batch",
}
JSON_VALUED = ("classes", "preprocess", "batch")
IR_RT_INFO = ("tlexport", "metadata")  # rt_info path of the JSON in an OpenVINO IR
FIELDS = tuple(ONNX_KEYS.values())

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


def embed_onnx(model_proto, meta: dict) -> None:
    """Set the `tlexport.*` metadata_props of an onnx.ModelProto in place (replacing old ones)."""
    keep = [p for p in model_proto.metadata_props if p.key not in ONNX_KEYS]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    for key, field in ONNX_KEYS.items():
        value = meta[field]
        entry = model_proto.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value) if field in JSON_VALUED else str(value)


def from_onnx_props(props: dict, source="ONNX metadata") -> dict:
    """`tlexport.*` string props (from onnx or an onnxruntime session's custom_metadata_map)
    -> validated metadata dict. Missing keys are absent from the result.

    Raises:
        ArtifactError: a value that is not JSON or breaks the schema (naming the key).
    """
    out = {}
    for key, field in ONNX_KEYS.items():
        if key in props:
            try:
                out[field] = json.loads(props[key]) if field in JSON_VALUED else props[key]
            except (ValueError, TypeError, RecursionError):
                raise ArtifactError(f"{source}: metadata field '{field}' ({key}) is not valid JSON") from None
    return validate(out, source)


def read_metadata(path: Path | str) -> dict:
    """Read the embedded metadata of an artifact without running it.

    Args:
        path: a `.onnx`, `.ts` (TorchScript), `.pt2`, OpenVINO `.xml`, `.ort`, `.tflite` or `.pte` file.
    Returns:
        {"classes", "preprocess", "arch", "weights_sha256", "tlexport_version", "torch_version"},
        validated (see `validate`); an empty dict when the file carries no tlexport metadata.
    Raises:
        UsageError: the file is missing or not a model file tlexport knows.
        ArtifactError: metadata that breaks the schema (one line naming the field).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    if path.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise UsageError(f"{path} is not a readable ONNX file ({first_line(e)})") from None
        return from_onnx_props({p.key: p.value for p in proto.metadata_props}, path)
    if path.suffix in (".ts", ".pt2"):
        return _read_zip_extra(path)
    readers = {".xml": read_ir_metadata, ".ort": _read_ort, ".tflite": read_tflite, ".pte": _read_pte}
    if path.suffix in readers:
        return validate(readers[path.suffix](path), path)  # every reader's result meets the one schema
    raise UsageError(f"{path}: unknown model type (expected .onnx, .ts, .pt2, .xml, .pte, .tflite or .ort)")


def read_ir_metadata(path: Path) -> dict:
    """The JSON at rt_info `tlexport/metadata` of an OpenVINO IR's XML ({} when absent). The
    model-level rt_info is a direct child of the root `<net>`; layers have their own, not read."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
        node = root.find("rt_info/" + "/".join(IR_RT_INFO))
        meta = json.loads(node.get("value")) if node is not None else {}
        return meta if isinstance(meta, dict) else {}
    except (ET.ParseError, ValueError, TypeError, OSError) as e:
        raise UsageError(f"{path} is not a readable OpenVINO IR ({first_line(e)})") from None


def _read_ort(path: Path) -> dict:
    """ONNX Runtime mobile files keep the ONNX metadata_props; onnxruntime reads them."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UsageError(f"{path} is not a readable .ort model ({first_line(e)})") from None
    return from_onnx_props(session.get_modelmeta().custom_metadata_map, path)


def read_tflite(path: Path) -> dict:
    """The `tlexport.json` metadata entry of a .tflite flatbuffer (read lazily, no interpreter)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise UsageError(not_installed("ai_edge_litert", f"{path}: reading .tflite")) from None
    try:
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"").decode() == TFLITE_ENTRY:
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    except (ValueError, OSError, IndexError, AttributeError) as e:
        raise UsageError(f"{path} is not a readable .tflite model ({first_line(e)})") from None
    return {}


def embed_tflite(path: Path, meta: dict) -> None:
    """Add (or replace) the `tlexport.json` metadata entry of a .tflite file in place."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buf = schema.BufferT()
    buf.data = np.frombuffer(to_json(meta).encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_ENTRY, len(model.buffers) - 1
    keep = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != TFLITE_ENTRY]
    model.metadata = keep + [entry]
    flatbuffer_utils.write_model(model, str(path))


def _read_pte(path: Path) -> dict:
    """Run the .pte's constant method (it returns a string; no model code runs)."""
    try:
        import torch  # noqa: F401 - ExecuTorch's extension module needs torch's libraries loaded
        from executorch.runtime import Runtime
    except ImportError:
        raise UsageError(not_installed("executorch", f"{path}: reading .pte")) from None
    try:
        program = Runtime.get().load_program(str(path))
        if PTE_METHOD not in program.method_names:
            return {}
        return json.loads(program.load_method(PTE_METHOD).execute([])[0])
    except Exception as e:  # ExecuTorch raises plain RuntimeError/ValueError for bad files
        raise UsageError(f"{path} is not a readable .pte program ({first_line(e)})") from None


def _read_zip_extra(path: Path) -> dict:
    """TorchScript and .pt2 archives are zip files; extra files live at `<root>/extra/NAME`."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            if not names:
                return {}
            info = z.getinfo(names[0])
            if info.file_size > 16 << 20:  # class names of 100k labels fit in a few MB
                raise ArtifactError(f"{path}: embedded {EXTRA_FILE} is implausibly large ({info.file_size} bytes)")
            text = z.read(names[0]).decode()
    except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as e:
        raise UsageError(f"{path} is not a readable model archive ({first_line(e)})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise ArtifactError(f"{path}: embedded {EXTRA_FILE} is not valid JSON") from None
    return validate(meta, path)
