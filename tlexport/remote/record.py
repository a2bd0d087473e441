"""Per-device results in the export's manifest.json, and the fastest verified file per device.

    "devices": {
      "<hostname>-<machine>[-emulated]": {
        "target": "ssh://pi@board", "device": {machine, cpu, isa, cores, os, python, versions...},
        "emulated": false, "updated": "2026-...Z",
        "files": {"model.int8.onnx": {"runtime": "onnxruntime", "precision": "int8",
                                      "verified": true, "parity_at": "...",
                                      "p50_ms": 4.1, "p90_ms": 4.6, "batch_size": 1, "bench_at": "..."}},
        "fastest": "model.int8.onnx"      # null on an emulated device: its timings are not speeds
      }
    }

Written under the export folder's lock (an export writing the folder makes this a one-line
error, never a lost update) and atomically (write_manifest: temp name, fsync, os.replace).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from ..errors import TlexportError
from .target import Target

MAX_DEVICES = 64


def device_key(device: dict) -> str:
    """A stable name for the device: hostname and machine (and `-emulated`)."""
    raw = f"{device.get('hostname') or 'unknown'}-{device.get('machine') or 'unknown'}"
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[:100]
    return key + ("-emulated" if device.get("emulated") else "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _update(export_dir: Path, target: Target, device: dict, change) -> str | None:
    """Apply `change(files)` to this device's entry under the lock; a note when nothing was recorded."""
    from ..fileio import folder_lock
    from ..tables.artifacts import read_manifest, write_manifest

    export_dir = Path(export_dir)
    try:
        with folder_lock(export_dir, "manifest update"):
            manifest = read_manifest(export_dir)
            if manifest is None:
                return "not recorded: the export folder has no manifest.json"
            devices = manifest.get("devices")
            devices = dict(devices) if isinstance(devices, dict) else {}
            key = device_key(device)
            entry = devices.get(key) if isinstance(devices.get(key), dict) else {}
            files = entry.get("files") if isinstance(entry.get("files"), dict) else {}
            change(files)
            emulated = bool(device.get("emulated"))
            devices[key] = {"target": target.text, "device": device, "emulated": emulated, "updated": _now(),
                            "files": files, "fastest": None if emulated else _fastest(files)}
            if emulated:
                devices[key]["fastest_note"] = "emulated — not a speed: no fastest file is named"
            if len(devices) > MAX_DEVICES:  # keep the most recent ones
                devices = dict(sorted(devices.items(), key=lambda kv: str(kv[1].get("updated")))[-MAX_DEVICES:])
            manifest["devices"] = devices
            write_manifest(export_dir, manifest)
    except TlexportError as e:  # locked by an export, disk full: the result stands, the record not
        return f"not recorded in manifest.json: {e}"
    return f"recorded in {export_dir / 'manifest.json'} under devices[{key!r}]"


def _fastest(files: dict) -> str | None:
    timed = [(row["p50_ms"], name) for name, row in files.items()
             if isinstance(row, dict) and row.get("verified") is True and row.get("batch_size") == 1
             and isinstance(row.get("p50_ms"), (int, float)) and math.isfinite(row["p50_ms"])]
    return min(timed)[1] if timed else None


def record_parity(export_dir, target: Target, device: dict, results) -> str | None:
    """Which files were verified (passed every gate) on this device."""
    def change(files):
        for r in results:
            if r.skipped_reason is not None or not r.artifact:
                continue
            row = files.setdefault(Path(r.artifact).name, {})
            row.update(runtime=r.runtime, precision=r.precision, verified=bool(r.passed), parity_at=_now())
            if not r.passed:
                row["failures"] = [str(f)[:300] for f in r.failures[:3]]
            else:
                row.pop("failures", None)
    return _update(export_dir, target, device, change)


def record_bench(export_dir, target: Target, device: dict, rows: list[dict]) -> str | None:
    """p50/p90 at batch 1 (else the smallest batch measured) per file on this device."""
    def change(files):
        best = {}
        for r in rows:
            if r.get("error") or not r.get("file"):
                continue
            if r["file"] not in best or r["batch_size"] < best[r["file"]]["batch_size"]:
                best[r["file"]] = r
        for name, r in best.items():
            row = files.setdefault(name, {})
            row.update(runtime=r["runtime"], precision=r["precision"], p50_ms=r["p50_ms"], p90_ms=r["p90_ms"],
                       batch_size=r["batch_size"], bench_at=_now())
    return _update(export_dir, target, device, change)


def fastest_on(export_dir, target_text: str) -> tuple[Path | None, str]:
    """The fastest verified file recorded for the device last reached with `target_text`, and a
    line saying where the choice came from."""
    from ..tables.artifacts import inside, read_manifest

    manifest = read_manifest(export_dir) or {}
    devices = manifest.get("devices") if isinstance(manifest.get("devices"), dict) else {}
    mine = [(str(e.get("updated")), k, e) for k, e in devices.items()
            if isinstance(e, dict) and e.get("target") == target_text]
    if not mine:
        return None, f"no result recorded for {target_text} in manifest.json (run parity and bench --on first)"
    _, key, entry = max(mine)
    name = entry.get("fastest")
    path = inside(Path(export_dir), name) if isinstance(name, str) else None
    if path is None or not path.exists():
        why = entry.get("fastest_note") or "no file both verified and timed there"
        return None, f"devices[{key!r}] names no fastest file ({why})"
    return path, f"the fastest verified file on {key}: {name}"
