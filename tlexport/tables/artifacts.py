"""The export folder: the manifest (`manifest.json`) that lists what a folder holds, whether a
folder holds an export at all, the operations on an artifact that may be a folder (size, digest,
atomic replace, removal), and the answer to "which run made this export".

What a file is (the file of a (format, precision, role), the kind of a file, companions) has its
one home in `tlexport.formats.files`, derived from the format registry's rows; it is re-exported
here for the many readers that meet it beside the manifest.

Torch-free to import.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError, UsageError
from ..fileio import read_json
from ..formats import registry
from ..formats.files import (ArtifactKind, all_files, companions_of, file_name, format_of_suffix, is_folder_artifact,
                             kind, kind_of_file, kinds, model_globs)
from ..formats.spec import BAKED, DEVICES, MODEL, PRECISIONS

__all__ = ["BAKED", "DEVICES", "MANIFEST", "MODEL", "PRECISIONS",  # the vocabulary is read from here too
           "ArtifactKind", "all_files", "companions_of", "file_name", "format_of_suffix", "is_folder_artifact",
           "kind", "kind_of_file", "kinds"]  # and what a file is (formats/files.py)
MANIFEST = "manifest.json"


def export_globs() -> tuple[str, ...]:
    """What marks a folder as a tlexport export: a model file of a registered format's suffix at
    its top, or its manifest."""
    return (*model_globs(), MANIFEST)


def holds_export(folder: Path | str) -> bool:
    """`folder` holds at least one artifact of a registered format, or a manifest.json."""
    folder = Path(folder)
    return any(any(folder.glob(g)) for g in export_globs())


# ---- validation of the shared vocabulary ---------------------------------------------------------
def check_choices(values, allowed, what: str) -> tuple:
    """`values` (a name or an iterable of names) as a de-duplicated tuple, every one in `allowed`.

    Raises:
        UsageError: naming the unknown value(s) and the choices.
    """
    values = (values,) if isinstance(values, str) else tuple(values or ())
    values = tuple(dict.fromkeys(values))
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(map(str, unknown))}; choose from {', '.join(allowed)}")
    return values


def check_precisions(values) -> tuple:
    return check_choices(values, PRECISIONS, "precision")


def check_devices(values) -> tuple:
    values = check_choices(values, DEVICES, "device")
    if not values:
        raise UsageError(f"no device given; choose from {', '.join(DEVICES)}")
    return values


# ---- manifest -----------------------------------------------------------------------------------
ENTRY_FIELDS = {"file": str, "format": str, "precision": str, "role": str, "devices": list}


def read_manifest(export_dir: Path | str) -> dict | None:
    """The export folder's manifest.json, validated (None when the folder has none).

    Raises:
        ArtifactError: the manifest is unreadable or malformed (not an object, an entry without
            `file`, wrong types, unknown format/precision/device); one line naming manifest.json
            and the field.
    """
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path)  # bounded: size and nesting depth checked before parsing (ArtifactError)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: must be a JSON object, not {type(manifest).__name__}")
    artifacts = manifest.get("artifacts", [])
    if not isinstance(artifacts, list):
        raise ArtifactError(f"{path}: field 'artifacts' must be a list, not {type(artifacts).__name__}")
    for i, entry in enumerate(artifacts):
        _check_entry(path, i, entry)
    if "run" in manifest and not isinstance(manifest["run"], (dict, type(None))):
        raise ArtifactError(f"{path}: field 'run' must be an object")
    return manifest


def _check_entry(path: Path, i: int, entry) -> None:
    where = f"{path}: artifacts[{i}]"
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where} must be an object, not {type(entry).__name__}")
    if "file" not in entry:
        raise ArtifactError(f"{where} has no 'file' field")
    for key, typ in ENTRY_FIELDS.items():
        if key in entry and not isinstance(entry[key], typ):
            raise ArtifactError(f"{where}.{key} must be a {typ.__name__}, not {type(entry[key]).__name__}")
    if not entry["file"] or "\x00" in entry["file"]:
        raise ArtifactError(f"{where}.file is empty or not a file name")
    fmt = entry.get("format")
    if fmt not in registry.FORMATS:
        raise ArtifactError(f"{where}.format {fmt!r} is not one of {', '.join(registry.FORMATS)}")
    suffix = registry.FORMATS[fmt].suffix
    if Path(entry["file"]).suffix != suffix:
        raise ArtifactError(f"{where}.file {entry['file']!r} lacks the {suffix} suffix of format {fmt}")
    if entry.get("precision") not in PRECISIONS:
        raise ArtifactError(f"{where}.precision {entry.get('precision')!r} is not one of {', '.join(PRECISIONS)}")
    if entry.get("role", MODEL) not in (MODEL, BAKED):
        raise ArtifactError(f"{where}.role {entry.get('role')!r} is not one of {MODEL}, {BAKED}")
    bad = [d for d in entry.get("devices") or () if d not in DEVICES]
    if bad:
        raise ArtifactError(f"{where}.devices holds {bad[0]!r}; allowed: {', '.join(DEVICES)}")


def write_manifest(export_dir: Path | str, manifest: dict) -> Path:
    """Write manifest.json atomically (it is written last: its presence means the folder is whole)."""
    from ..fileio import write_json

    path = Path(export_dir) / MANIFEST
    write_json(path, manifest)
    return path


def inside(folder: Path | str, name: str) -> Path | None:
    """`folder/name` when it resolves inside `folder` (after following every symlink), else None.
    Absolute names, `..` and links that leave the folder all resolve outside."""
    folder = Path(folder)
    if not name or Path(name).is_absolute():
        return None
    try:
        root = folder.resolve(strict=True)
        target = (folder / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop, an unreadable folder
        return None
    return folder / name if target != root and target.is_relative_to(root) else None


@dataclass(frozen=True)
class Entry:
    """An artifact found in an export folder; `refused` says why it must not be loaded."""

    path: Path
    format: str
    precision: str
    role: str = MODEL
    devices: tuple[str, ...] = DEVICES
    refused: str | None = None

    @property
    def runs_code(self) -> bool:
        return registry.FORMATS[self.format].runs_code


def list_artifacts(export_dir: Path | str) -> list[Entry]:
    """The artifacts of an export folder: its manifest's entries when it has one, else tlexport's
    fixed file names that exist. An entry whose path resolves outside the folder (`..`, an
    absolute path, a symlink leading out) is returned with `refused` set and must not be opened.

    Raises:
        ArtifactError: a malformed manifest (see read_manifest).
    """
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is not None:
        rows = [(a["file"], a["format"], a["precision"], a.get("role", MODEL), tuple(a.get("devices") or DEVICES))
                for a in manifest.get("artifacts", [])]
    else:
        rows = [(k.file, k.format, k.precision, k.role, DEVICES) for k in kinds()
                if os.path.lexists(export_dir / k.file)]
    out = []
    for name, fmt, precision, role, devices in rows:
        path = inside(export_dir, name)
        if path is None:
            reason = f"{MANIFEST} entry {name!r} resolves outside {export_dir}; refused" if manifest is not None \
                else f"{name} is a link that leads outside {export_dir}; refused"
            out.append(Entry(export_dir / Path(name).name, fmt, precision, role, devices, refused=reason))
        elif path.is_dir() if registry.FORMATS[fmt].folder else path.is_file():
            out.append(Entry(path, fmt, precision, role, devices))
    return out


# ---- artifacts that may be folders --------------------------------------------------------------
def artifact_files(path: Path) -> list[Path]:
    """The regular files of an artifact: itself, or every file under a folder artifact in sorted
    order of their relative paths (links inside a folder are listed, never followed)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return [path]
    out = []
    for root, dirs, files in os.walk(path):  # os.walk does not descend into linked folders
        out += [Path(root) / name for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]]
    return sorted(out, key=lambda p: p.relative_to(path).as_posix())


def artifact_size(path: Path | str) -> int:
    """Bytes of a file, or of every file in a folder artifact."""
    return sum(f.lstat().st_size for f in artifact_files(Path(path)))


def artifact_sha256(path: Path | str) -> str:
    """sha256 of a file. Of a folder: sha256 of one line per file, in sorted order of relative
    POSIX paths, `<path>\\0<sha256 of its bytes>\\n` (a link: `<path>\\0-> <target>\\n`), so the
    digest depends on names and contents only, not on listing order or timestamps."""
    import hashlib

    from ..fileio import sha256

    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return sha256(path)
    h = hashlib.sha256()
    for f in artifact_files(path):
        rel = f.relative_to(path).as_posix()
        value = f"-> {os.readlink(f)}" if f.is_symlink() else sha256(f)
        h.update(f"{rel}\0{value}\n".encode())
    return h.hexdigest()


def remove_artifact(path: Path | str) -> None:
    """Delete a file or a folder artifact (a link is unlinked, never followed)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_artifact(src: Path | str, dst: Path | str) -> None:
    """Move the staged artifact `src` over `dst` (same file system). A file is replaced atomically.
    A folder cannot be renamed over a non-empty one: the old one is renamed aside first (to a
    `.NAME.tmp-PID` name that `fileio.clean_stale` removes should the process die here), the new
    one renamed in, then the old one deleted. A reader sees the old folder or the new one whole,
    never a mix of both."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir() and not dst.is_symlink():
        aside = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        remove_artifact(aside)
        os.replace(dst, aside)
        os.replace(src, dst)
        remove_artifact(aside)
    elif src.is_dir() and (dst.exists() or dst.is_symlink()):
        dst.unlink()  # a file (or link) where the new folder goes
        os.replace(src, dst)
    else:
        os.replace(src, dst)


def find_run_dir(export_dir: Path | str, run_dir=None, *, required: bool = True) -> Path | None:
    """The run an export came from: `run_dir` when given, else the manifest's record, else the
    export folder's parent (tlexport writes RUN/export by default), else the folder itself.

    Raises:
        UsageError: none of them holds run.json and `required` is set (else None).
    """
    export_dir = Path(export_dir)
    if run_dir is not None:
        return Path(run_dir).expanduser()
    try:
        manifest = read_manifest(export_dir) or {}
    except ArtifactError:
        manifest = {}  # the run is found from the parent folder; the artifacts' reader reports it
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    recorded = [Path(c) for c in (run.get("dir"),) if isinstance(c, str) and c]
    from ..run import RUN_JSON

    for cand in (*recorded, export_dir.parent, export_dir):
        if (cand / RUN_JSON).is_file():
            return cand
    if not required:
        return None
    raise UsageError(f"cannot find the training run of {export_dir} (no {RUN_JSON} in its manifest's "
                     "run dir or parent folder); pass --run-dir")
