"""LiteRT metadata: a TFLite `Model.metadata` entry `tlexport.json`, read from the flatbuffer with
ai-edge-litert's schema (torch-free, no interpreter)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError, first_line
from ...tables.extras import not_installed
from ...tables.metadata import to_json
from ...fileio import parse_json

TFLITE_ENTRY = "tlexport.json"  # name of the TFLite Model.metadata entry


def read(path: Path) -> dict:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise UsageError(not_installed("ai_edge_litert", f"{path}: reading .tflite")) from None
    try:
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"").decode() == TFLITE_ENTRY:
                return parse_json(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes(), f"{path}: {TFLITE_ENTRY}")
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
