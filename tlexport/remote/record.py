"""Per-device results in the export's manifest.json, and the fastest verified file per device.

    "devices": {
      "<hostname>-<machine>[-<digest of machine-id and Python path>][-emulated]": {
        "target": "ssh://pi@board", "device": {machine, cpu, isa, cores, os, python, versions...},
        "emulated": false, "updated": "2026-...Z",
        "files": {"model.int8.onnx": {"sha256": "...", "runtime": "onnxruntime", "precision": "int8",
                                      "verified": true, "parity_at": "...",
                                      "p50_ms": 4.1, "p90_ms": 4.6, "batch_size": 1, "bench_at": "..."}},
        "fastest": "model.int8.onnx"      # null on an emulated device: its timings are not speeds
      }
    }

Each file's row holds the sha256 of the bytes it speaks for (the manifest's): a result for other
bytes starts the row afresh, and an export that writes the file again drops it
(`tables.devices.carried`). Written under the export folder's lock (an export writing the folder makes this a one-line
error, never a lost update) and atomically (write_manifest: temp name, fsync, os.replace).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import TlexportError
from .target import Target

MAX_DEVICES = 64


def device_key(device: dict) -> str:
    """A stable name for the device: hostname, machine, then a digest of its machine-id (boards
    that share a hostname stay apart) and of the Python that ran there (two venvs with other
    runtime versions on one board are two records: a verdict holds for the runtime that gave it),
    and `-emulated`."""
    import hashlib

    raw = f"{device.get('hostname') or 'unknown'}-{device.get('machine') or 'unknown'}"
    ident = [device[k] for k in ("machine_id", "python_path") if isinstance(device.get(k), str) and device[k]]
    if ident:
        raw += "-" + hashlib.sha256("\0".join(ident).encode()).hexdigest()[:8]
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[:100]
    return key + ("-emulated" if device.get("emulated") else "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _update(export_dir: Path, target: Target, device: dict, rows: dict[str, dict]) -> str | None:
    """Merge `rows` ({file: fields}) into this device's entry under the lock, each row tied to the
    file's sha256 in the manifest; a note when nothing was recorded."""
    from ..fileio import folder_lock
    from ..tables.artifacts import read_manifest, write_manifest
    from ..tables.devices import artifact_shas, current, fastest

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
            files = dict(entry.get("files")) if isinstance(entry.get("files"), dict) else {}
            shas = artifact_shas(manifest)
            for name, fields in rows.items():
                if shas.get(name) is None:  # not (or no longer) an artifact of this export
                    continue
                row = files.get(name) if current(files.get(name), shas[name]) else {}
                files[name] = {**row, "sha256": shas[name], **fields}
                if fields.get("verified"):
                    files[name].pop("failures", None)
            emulated = bool(device.get("emulated"))
            devices[key] = {"target": target.text, "device": device, "emulated": emulated, "updated": _now(),
                            "files": files, "fastest": None if emulated else fastest(files)}
            if emulated:
                devices[key]["fastest_note"] = "emulated — not a speed: no fastest file is named"
            if len(devices) > MAX_DEVICES:  # keep the most recent ones
                devices = dict(sorted(devices.items(), key=lambda kv: str(kv[1].get("updated")))[-MAX_DEVICES:])
            manifest["devices"] = devices
            write_manifest(export_dir, manifest)
    except TlexportError as e:  # locked by an export, disk full: the result stands, the record not
        return f"not recorded in manifest.json: {e}"
    return f"recorded in {export_dir / 'manifest.json'} under devices[{key!r}]; " + _verdict(devices[key])


def _verdict(entry: dict) -> str:
    """What the record now says the app should ship to that device."""
    files, name = entry["files"], entry["fastest"]
    if entry["emulated"]:
        return "no fastest file on an emulated device (its timings are not speeds)"
    if name:
        return f"the fastest verified file there: {name} (p50 {files[name]['p50_ms']:.3g} ms at batch 1)"
    verified = [n for n, row in files.items() if row.get("verified") is True]
    timed = [n for n, row in files.items() if row.get("batch_size") == 1]
    if not verified:
        return "no file is verified there yet (parity --on verifies)"
    return "no verified file is timed there yet (bench --on times)" if not timed else \
        "no file is both verified and timed at batch 1 there"


def record_parity(export_dir, target: Target, device: dict, results) -> str | None:
    """Which files were verified (passed every gate) on this device."""
    rows = {}
    for r in results:
        if r.skipped_reason is not None or not r.artifact:
            continue
        row = rows[Path(r.artifact).name] = dict(runtime=r.runtime, precision=r.precision, verified=bool(r.passed),
                                                 parity_at=_now())
        if not r.passed:
            row["failures"] = [str(f)[:300] for f in r.failures[:3]]
    return _update(export_dir, target, device, rows)


def record_bench(export_dir, target: Target, device: dict, rows: list[dict]) -> str | None:
    """p50/p90 at batch 1 (else the smallest batch measured) per file on this device."""
    best = {}
    for r in rows:
        if r.get("error") or not r.get("file"):
            continue
        if r["file"] not in best or r["batch_size"] < best[r["file"]]["batch_size"]:
            best[r["file"]] = r
    timed = {name: dict(runtime=r["runtime"], precision=r["precision"], p50_ms=r["p50_ms"], p90_ms=r["p90_ms"],
                        batch_size=r["batch_size"], competing_load=r.get("competing_load"), bench_at=_now())
             for name, r in best.items()}
    return _update(export_dir, target, device, timed)


def fastest_on(export_dir, target_text: str) -> tuple[Path | None, str]:
    """The fastest verified file recorded for the device last reached with `target_text`, and a
    line saying where the choice came from."""
    from ..tables.artifacts import inside, read_manifest
    from ..tables.devices import artifact_shas, current

    manifest = read_manifest(export_dir) or {}
    devices = manifest.get("devices") if isinstance(manifest.get("devices"), dict) else {}
    mine = [(str(e.get("updated")), k, e) for k, e in devices.items()
            if isinstance(e, dict) and e.get("target") == target_text]
    if not mine:
        return None, f"no result recorded for {target_text} in manifest.json (run parity and bench --on first)"
    _, key, entry = max(mine)
    name = entry.get("fastest")
    files = entry.get("files") if isinstance(entry.get("files"), dict) else {}
    shas = artifact_shas(manifest)
    fresh = isinstance(name, str) and current(files.get(name), shas.get(name))
    path = inside(Path(export_dir), name) if fresh else None
    if path is None or not path.exists():
        stale = [n for n, row in files.items() if not current(row, shas.get(n))]
        why = (entry.get("fastest_note") or
               (f"its records are not of the files now there ({', '.join(sorted(stale)[:3])}"
                f"{', ...' if len(stale) > 3 else ''}): run parity and bench --on again" if stale else
                "no file both verified and timed there"))
        return None, f"devices[{key!r}] names no fastest file ({why})"
    return path, f"the fastest verified file on {key}: {name}"
