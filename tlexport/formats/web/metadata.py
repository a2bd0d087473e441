"""The metadata of a web folder: the `tlexport.*` props embedded in the ONNX model its
config.json names (the page reads the same props in the browser)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UsageError
from ..onnx.metadata import read as read_onnx

CONFIG = "config.json"
MAX_CONFIG_BYTES = 64 * 1024


def config(folder: Path) -> dict:
    """The folder's config.json: {"model", "labels", ...} (UsageError when unreadable)."""
    path = Path(folder) / CONFIG
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; not a tlexport web folder")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(f"{path} is not readable ({type(e).__name__}); not a tlexport web folder") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("model", "labels")):
        raise UsageError(f"{path} does not name its model and labels files")
    return data


def model_file(folder: Path) -> Path:
    """The ONNX file the page loads: inside the folder, never a path leading out of it."""
    from ...tables.artifacts import inside

    folder = Path(folder)
    name = config(folder)["model"]
    path = inside(folder, name)
    if path is None or not path.is_file():
        raise UsageError(f"{folder / CONFIG} names {name!r}, which is not a file inside {folder}")
    return path


def read(path: Path) -> dict:
    return read_onnx(model_file(path))
