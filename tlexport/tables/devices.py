"""The manifest's per-device records (`devices`, written by `parity`/`bench --on`), the parts that
need no target: each recorded file is tied to the bytes it was checked with (the artifact's
sha256), the fastest verified file of a device, and what of the records an export keeps.

A record speaks for one file's bytes. When an export writes a file again (other bytes) or removes
it, what a device said of it no longer holds: the row goes, and the device's fastest file is chosen
again from what is left. The manifest is input: rows of the wrong type are passed over.
"""

from __future__ import annotations

import math


def artifact_shas(manifest: dict) -> dict[str, str]:
    """{file: sha256} of the manifest's artifacts that carry one."""
    return {e["file"]: e["sha256"] for e in manifest.get("artifacts", [])
            if isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)}


def fastest(files: dict) -> str | None:
    """The verified file timed fastest at batch 1 among a device's rows, or None."""
    timed = [(row["p50_ms"], name) for name, row in files.items()
             if isinstance(row, dict) and row.get("verified") is True and row.get("batch_size") == 1
             and isinstance(row.get("p50_ms"), (int, float)) and not isinstance(row["p50_ms"], bool)
             and math.isfinite(row["p50_ms"]) and row["p50_ms"] > 0]
    return min(timed)[1] if timed else None


def current(row, sha: str | None) -> bool:
    """Whether a device's row speaks for the file's present bytes."""
    return isinstance(row, dict) and sha is not None and row.get("sha256") == sha


def carried(devices, artifacts: list[dict]) -> dict:
    """The device records an export keeps: the rows of files it still lists with the same bytes,
    each device's fastest file chosen again; a device with no row left is dropped."""
    if not isinstance(devices, dict):
        return {}
    shas = artifact_shas({"artifacts": artifacts})
    out = {}
    for key, entry in devices.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            continue
        files = {name: row for name, row in entry["files"].items() if current(row, shas.get(name))}
        if files:
            out[key] = {**entry, "files": files, "fastest": None if entry.get("emulated") else fastest(files)}
    return out
