"""The metadata every artifact carries, so an app needs nothing but the model file.

Written into ONNX `metadata_props` (keys `tlexport.*`, also kept by the `.ort` conversion), and
into a `tlexport.json` extra file inside TorchScript and .pt2 zip archives; as a TFLite metadata
entry `tlexport.json`; and as an ExecuTorch constant method `tlexport_metadata` returning the same
JSON. Reading never executes anything: ONNX is parsed with the `onnx` package (torch-free), the
archives are opened with `zipfile`, `.ort` metadata comes from onnxruntime's model metadata and
`.tflite` from its flatbuffer (ai-edge-litert's schema, torch-free); `.pte` asks ExecuTorch's
runtime for the constant (it imports torch: ExecuTorch's runtime needs it).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import UsageError, first_line

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
        path: a `.onnx`, `.ts` (TorchScript) or `.pt2` file.
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
    readers = {".ort": _read_ort, ".tflite": read_tflite, ".pte": _read_pte}
    if path.suffix in readers:
        return readers[path.suffix](path)
    raise UsageError(f"{path}: unknown model type (expected .onnx, .ts, .pt2, .pte, .tflite or .ort)")


def _read_ort(path: Path) -> dict:
    """ONNX Runtime mobile files keep the ONNX metadata_props; onnxruntime reads them."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UsageError(f"{path} is not a readable .ort model ({first_line(e)})") from None
    return from_onnx_props(session.get_modelmeta().custom_metadata_map)


def read_tflite(path: Path) -> dict:
    """The `tlexport.json` metadata entry of a .tflite flatbuffer (read lazily, no interpreter)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise UsageError(f"{path}: reading .tflite needs ai-edge-litert (pip install ai-edge-litert)") from None
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
        raise UsageError(f"{path}: reading .pte needs executorch (pip install --no-deps executorch==1.5.1)") from None
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
            return json.loads(z.read(names[0]).decode())
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UsageError(f"{path} is not a readable model archive ({first_line(e)})") from None
