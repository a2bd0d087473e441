"""ONNX Runtime mobile metadata: `.ort` files keep the ONNX `metadata_props`; onnxruntime reads them."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError, first_line
from ..onnx.metadata import from_onnx_props


def read(path: Path) -> dict:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UsageError(f"{path} is not a readable .ort model ({first_line(e)})") from None
    return from_onnx_props(session.get_modelmeta().custom_metadata_map, path)
