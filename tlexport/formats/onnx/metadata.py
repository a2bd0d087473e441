"""ONNX metadata: `tlexport.*` entries of the model's `metadata_props` (kept by the `.ort`
conversion too), read with the `onnx` package (torch-free) or from an onnxruntime session."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UsageError, first_line
from ...tables.metadata import validate
from ...fileio import parse_json

# metadata_props keys -> keys of the dict every reader returns.
ONNX_KEYS = {
    "tlexport.classes": "classes",
    "tlexport.preprocess": "preprocess",
    "tlexport.arch": "arch",
    "tlexport.weights_sha256": "weights_sha256",
    "tlexport.version": "tlexport_version",
    "torch.version": "torch_version",
    "tlexport.batch": "batch",
    "tlexport.in_graph_preprocess": "in_graph_preprocess",
}
JSON_VALUED = ("classes", "preprocess", "batch", "in_graph_preprocess")
OPTIONAL = ("in_graph_preprocess",)  # written only by the artifacts that have it


def embed_onnx(model_proto, meta: dict) -> None:
    """Set the `tlexport.*` metadata_props of an onnx.ModelProto in place (replacing old ones)."""
    keep = [p for p in model_proto.metadata_props if p.key not in ONNX_KEYS]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    for key, field in ONNX_KEYS.items():
        if field in OPTIONAL and field not in meta:
            continue
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
            if field in JSON_VALUED:
                out[field] = parse_json(props[key], f"{source}: metadata field '{field}' ({key})")
            else:
                out[field] = props[key]
    return validate(out, source)


def read(path: Path) -> dict:
    """The metadata of an `.onnx` file, parsed with `onnx` (weights outside the file not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UsageError(f"{path} is not a readable ONNX file ({first_line(e)})") from None
    return from_onnx_props({p.key: p.value for p in proto.metadata_props}, path)
