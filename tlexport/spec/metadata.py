"""The metadata every artifact carries, so an app needs nothing but the model file.

Written into ONNX `metadata_props` (keys `tlexport.*`), into a `tlexport.json` extra file
inside TorchScript and .pt2 zip archives, and into an OpenVINO IR's runtime info (`rt_info`, path
`tlexport/metadata`, the same JSON). Reading never executes anything: ONNX is parsed with the
`onnx` package (torch-free), the archives are opened with `zipfile`, the IR's XML with the
standard library (no openvino needed).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import UsageError, first_line

EXTRA_FILE = "tlexport.json"
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


def from_onnx_props(props: dict) -> dict:
    """`tlexport.*` string props (from onnx or an onnxruntime session's custom_metadata_map)
    -> metadata dict. Missing keys are absent from the result."""
    out = {}
    for key, field in ONNX_KEYS.items():
        if key in props:
            out[field] = json.loads(props[key]) if field in JSON_VALUED else props[key]
    return out


def read_metadata(path: Path | str) -> dict:
    """Read the embedded metadata of an artifact without running it.

    Args:
        path: a `.onnx`, `.ts` (TorchScript), `.pt2` or OpenVINO `.xml` file.
    Returns:
        {"classes", "preprocess", "arch", "weights_sha256", "tlexport_version", "torch_version"};
        an empty dict when the file carries no tlexport metadata.
    Raises:
        UsageError: the file is missing or not a model file tlexport knows.
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
        return from_onnx_props({p.key: p.value for p in proto.metadata_props})
    if path.suffix in (".ts", ".pt2"):
        return _read_zip_extra(path)
    if path.suffix == ".xml":
        return read_ir_metadata(path)
    raise UsageError(f"{path}: unknown model type (expected .onnx, .ts, .pt2 or .xml)")


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


def _read_zip_extra(path: Path) -> dict:
    """TorchScript and .pt2 archives are zip files; extra files live at `<root>/extra/NAME`."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            if not names:
                return {}
            return json.loads(z.read(names[0]).decode())
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UsageError(f"{path} is not a readable model archive ({first_line(e)})") from None
