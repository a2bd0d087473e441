"""Publishing an export into its folder: exporting again ADDS.

A second `tlexport export` into a folder keeps what an earlier one published there: the files it
makes replace their earlier versions (and say so), every other entry of the manifest stays with
its own verification and settings, and the manifest lists both. Removing files this export does
not make needs `replace=True` (`--replace`), and each removal is announced. An earlier export of
other weights (another run, or the run trained further) is refused: one folder never mixes
artifacts of two models.

The timing that names each runtime's fastest file is one measurement: the kept verified files are
timed again beside the new ones (see `pipeline._time_files`), and every `speed` in a manifest
comes from that one measurement, so "fastest" never compares numbers taken at different times.

Order on disk: the manifest is removed, the new files are moved in (each atomically), removed
files go, and manifest.json is written last; its presence means the folder is whole.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ArtifactError, UsageError
from ..formats import registry
from ..tables import artifacts as table
from .job import Artifact


@dataclass
class Previous:
    """What an earlier export left in the folder: its manifest's entries (kept unless made again),
    its history, and tlexport-named files no manifest lists."""

    entries: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    devices: dict = field(default_factory=dict)  # parity/bench --on records (tables.devices)


def files_of(a: Artifact | dict) -> list[str]:
    """The artifact's file, then its companions: those its builder listed, else the spec's."""
    file, companions = (a["file"], a.get("companions") or []) if isinstance(a, dict) else (a.file, a.companions)
    listed = [c["file"] for c in companions if isinstance(c, dict) and isinstance(c.get("file"), str)]
    return [file, *(listed or table.companions_of(file))]


def previous(out_dir: Path, weights_sha256: str, replace: bool) -> Previous:
    """Read what an earlier export published in `out_dir` (nothing with `replace`).

    Raises:
        UsageError: the earlier export is of other weights (exit 2: another --out, or --replace).
        ArtifactError: its manifest.json is malformed (--replace starts the folder afresh).
    """
    if replace:
        return Previous()
    try:
        manifest = table.read_manifest(out_dir)
    except ArtifactError as e:
        raise ArtifactError(f"{e}; --replace starts {out_dir} afresh") from None
    if manifest is None:
        return Previous(unlisted=[n for n in table.all_files() if _present(out_dir, n)])
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    theirs = run.get("weights_sha256")
    if manifest.get("artifacts") and theirs != weights_sha256:
        raise UsageError(f"{out_dir} holds an export of other weights (run {run.get('dir', '?')}, weights "
                         f"{str(theirs)[:12]}): give another --out, or --replace to remove that export")
    entries = [e for e in manifest.get("artifacts", []) if table.inside(out_dir, e["file"]) is not None]
    history = [h for h in manifest.get("exports", []) if isinstance(h, dict)] or [_legacy_history(manifest)]
    listed = {f for e in entries for f in files_of(e)}
    unlisted = [n for n in table.all_files() if n not in listed and _present(out_dir, n)]
    devices = manifest.get("devices") if isinstance(manifest.get("devices"), dict) else {}
    return Previous(entries, history, unlisted, devices)


def _present(out_dir: Path, name: str) -> bool:
    return (out_dir / name).exists() or (out_dir / name).is_symlink()


def _legacy_history(manifest: dict) -> dict:
    """The one export a manifest written before exports were merged describes."""
    return {"created": manifest.get("created"), "files": [e["file"] for e in manifest.get("artifacts", [])]}


def kept_entries(prev: Previous, made: list[Artifact]) -> list[dict]:
    """The earlier entries this export does not make again (a file made again replaces its entry)."""
    new = {f for a in made for f in files_of(a)}
    return [e for e in prev.entries if e["file"] not in new]


def kept_artifact(entry: dict) -> Artifact:
    """An earlier manifest entry as an Artifact (for the timing), unknown keys dropped."""
    names = {f.name for f in fields(Artifact)}
    return Artifact(**{k: v for k, v in entry.items() if k in names})


def plan_changes(prev: Previous, made: list[Artifact], failed: list[dict], out_dir: Path, replace: bool,
                 kept: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(files replaced, files to remove, notes): one line per kind of change, said to the user."""
    new = {f for a in made for f in files_of(a)}
    keep = {f for e in kept for f in files_of(e)}
    replaced = [a.file for a in made if any(_present(out_dir, f) for f in files_of(a))]
    if replace:  # (prev is empty then) every tlexport file this export does not make
        remove = [n for n in table.all_files() if n not in new and _present(out_dir, n)]
    else:  # what a replaced entry had and its new version has not; only tlexport's own names, as
        # the manifest is input, never a list of files to delete
        ours = set(table.all_files())
        remove = list(dict.fromkeys(f for e in prev.entries if e["file"] in new for f in files_of(e)
                                    if f not in new and f not in keep and f in ours))
    notes = []
    if replaced:
        notes.append(f"replaced {', '.join(replaced)} (exported again)")
    if kept:
        notes.append(f"kept {len(kept)} file(s) of earlier exports: {', '.join(e['file'] for e in kept)} "
                     "(--replace removes them)")
    stale = {e["file"] for e in prev.entries} & {f["file"] for f in failed}
    if stale:
        notes.append(f"kept the earlier {', '.join(sorted(stale))}: exporting it again failed")
    if replace and remove:
        notes.append(f"removed (--replace): {', '.join(remove)}")
    if prev.unlisted and not replace:
        left = [n for n in prev.unlisted if n not in new]
        if left:
            notes.append(f"left {', '.join(left)} as found: no manifest lists them (--replace removes them)")
    return replaced, remove, notes


def describe(artifacts: list[Artifact], folder: Path, crop: int, batch, free_size: bool = False) -> None:
    """Fill each staged artifact's size and sha256 (a folder's: see
    `tables.artifacts.artifact_sha256`), its companions' sizes and checksums, what its format's
    `describe` hook reads from the file (ONNX: opset, inputs/outputs, the oldest runtime releases
    that load it), and, where the hook left them empty, the inputs/outputs every tlexport model
    has: one float NCHW image batch in, logits out."""
    from . import hooks

    side = ("height", "width") if free_size else (crop, crop)
    for a in artifacts:
        path = folder / a.file
        a.size, a.sha256 = table.artifact_size(path), table.artifact_sha256(path)
        a.companions = [{"file": c, "size": table.artifact_size(folder / c), "sha256": table.artifact_sha256(folder / c)}
                        for c in files_of(a)[1:]]
        hooks.describe(a, path)
        if not a.inputs:  # neither the builder (ORT: its source ONNX's) nor the hook set them
            dtype = "float16" if a.precision == "fp16" else "float32"
            a.inputs = [{"name": "image", "dtype": dtype, "shape": [batch, 3, *side]}]
            a.outputs = [{"name": "logits", "dtype": dtype, "shape": [batch, "classes"]}]


def publish_export(result, job, prev: Previous, kept: list[dict], verification: dict, timing: dict) -> None:
    """Merge `result` (an `ExportResult`) with what earlier exports left, say what changes, then
    move the staged files into place and write manifest.json last."""
    replace, staging, out_dir = job.options.replace, job.staging, result.out_dir
    result.replaced, remove, notes = plan_changes(prev, result.artifacts, result.failed, out_dir, replace, kept)
    result.removed = remove if replace else []
    result.kept = [e["file"] for e in kept]
    result.notes = notes + result.notes
    result.manifest = manifest(result, job.run, job, verification, timing, kept, prev)
    files = [f for a in result.artifacts for f in reversed(files_of(a))]  # OpenVINO: weights before the graph
    publish(files, remove, staging, out_dir, result.manifest)


def publish(files: list[str], remove: list[str], staging: Path, out_dir: Path, manifest: dict) -> None:
    """Move the staged `files` (and folders) into place, delete `remove`, then write manifest.json
    last (removed first, so no reader pairs the old manifest with new files)."""
    with contextlib.suppress(FileNotFoundError):
        (out_dir / table.MANIFEST).unlink()
    for name in files:  # Triton's files live in sub-folders of model_repository/
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        table.replace_artifact(staging / name, out_dir / name)
    for name in remove:
        table.remove_artifact(out_dir / name)
    prune_empty(out_dir, table.all_files())
    table.write_manifest(out_dir, manifest)


def prune_empty(out_dir: Path, names) -> None:
    """Remove the empty sub-folders tlexport's nested file names left (a model dropped from a
    Triton repository), deepest first; folders that hold anything else stay."""
    parents = {p for name in names for p in Path(name).parents if p != Path(".")}
    for sub in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            (out_dir / sub).rmdir()


def manifest(result, run, job, verification: dict, timing: dict, kept: list[dict], prev: Previous) -> dict:
    """The merged manifest: this export's settings at the top (and on each of its entries, since a
    folder may now hold files of several exports), the kept entries, and every export's record.
    The settings are the generic ones and those the formats' `prepare` hooks decided
    (`job.settings`: ONNX's targets and opset)."""
    from .. import __version__
    from ..envinfo import versions
    from ..tables.devices import carried

    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    settings = {"created": created, "batch": "dynamic" if job.dynamic else int(job.example.shape[0]),
                "dynamic_size": job.dynamic_size, "device": job.device, **job.settings}
    new = [{**a.to_dict(), "export": settings} for a in result.artifacts]
    devices = carried(prev.devices, new + kept)  # what devices said of files still there, same bytes
    this = {**settings, "files": [a.file for a in result.artifacts], "replaced": result.replaced,
            "removed": result.removed, "failed": [f["file"] for f in result.failed]}
    return {
        "tlexport_version": __version__,
        **settings,
        "run": {"dir": str(run.dir.resolve()), "arch": run.arch, "classes": run.classes,
                "preprocess": run.preprocess.to_dict(), "weights_sha256": job.meta["weights_sha256"],
                "versions": run.meta.get("versions", {})},
        "artifacts": new + kept,
        "skipped": result.skipped,
        "failed": result.failed,
        "verification": verification,
        "fastest": timing.pop("fastest", {}),
        "timing": timing,
        "exports": [*prev.history, this],
        "versions": versions(libraries(result.artifacts)),
        **({"devices": devices} if devices else {}),
    }


def libraries(artifacts: list[Artifact]) -> tuple[str, ...]:
    """The libraries whose versions the manifest records: the common ones, and the optional
    packages of every format exported (its spec's `needs`, already imported by its builder)."""
    exported = dict.fromkeys(a.format for a in artifacts)
    needs = [r.module for f in exported for r in registry.get(f).needs]
    return tuple(dict.fromkeys(["torch", "torchvision", "onnx", "onnxruntime", "openvino", "numpy", *needs]))
