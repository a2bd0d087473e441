"""The fastest verified file of an export folder for one runtime, read from its manifest: export
times the verified files each CPU runtime can run against each other on the machine that
exports (`tlexport.exporters.speed`) and records `speed[runtime].p50_ms` per artifact. Torch-free
and free of runtimes, so `predict` can call it before loading anything.

The manifest is input: rows with a wrong type, a path leaving the folder, a file that is not
there or not verified are passed over, never opened.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..formats import registry
from .artifacts import MODEL, inside, read_manifest


def fastest_file(export_dir: Path | str, runtime: str = "onnxruntime") -> Path | None:
    """The file of `export_dir` that export timed fastest on `runtime` among those that passed
    their verification, or None (no manifest, nothing timed for that runtime, or no usable row:
    the caller keeps its own order). Files that run code when loaded are never picked.

    Raises:
        ArtifactError: a malformed manifest.json (see `read_manifest`).
    """
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is None:
        return None
    timed = []
    for entry in manifest.get("artifacts", []):
        ms = _p50(entry, runtime)
        if ms is None or entry.get("verified") is not True or entry.get("role", MODEL) != MODEL:
            continue
        spec = registry.FORMATS[entry["format"]]  # read_manifest checked the format name
        if spec.runs_code or runtime not in spec.runtimes_on("cpu"):
            continue
        path = inside(export_dir, entry["file"])
        if path is not None and (path.is_dir() if spec.folder else path.is_file()):
            timed.append((ms, path))
    return min(timed, key=lambda t: t[0])[1] if timed else None


def _p50(entry: dict, runtime: str) -> float | None:
    """The entry's timed median on `runtime`, when it is a positive finite number."""
    speed = entry.get("speed")
    row = speed.get(runtime) if isinstance(speed, dict) else None
    ms = row.get("p50_ms") if isinstance(row, dict) else None
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
        return None
    return float(ms)
