"""One run folder on disk: its paths, its files read (bounded and validated, one error per
problem) and written (atomically), its lock, and the judgement of what it holds."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import MissingInput, NotARun, TlexportError, UsageError, first_line, os_error
from ..fileio import clean_stale, folder_lock, read_json, write_bytes, write_json, write_text
from . import layout as L
from .layout import bad_class_name

META_MAX_BYTES = 16 << 20
SPLIT_MAX_BYTES = 512 << 20  # one row per image: millions of images stay readable


class RunError(TlexportError):
    """A run folder is missing, is not a run, or holds a file that cannot be used (exit 1)."""


class RunDir:
    """The run folder at `path` (`~` expanded). Nothing is read or created until asked."""

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- paths -----------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def meta_file(self) -> Path:
        return self.path / L.RUN_JSON

    @property
    def split_file(self) -> Path:
        return self.path / L.SPLIT_JSON

    @property
    def checkpoint_file(self) -> Path:
        return self.path / L.CHECKPOINT

    def weights_file(self, which: str = "best") -> Path:
        if which not in L.WEIGHTS:
            raise UsageError(f"unknown weights {which!r}; use {' or '.join(L.WEIGHTS)}")
        return self.path / L.WEIGHTS[which]

    # ---- what it holds ---------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """A run started here (it wrote run.json, split.json or a checkpoint)."""
        return any((self.path / n).exists() for n in (L.RUN_JSON, L.SPLIT_JSON, L.CHECKPOINT))

    def has_checkpoint(self) -> bool:
        return self.checkpoint_file.is_file()

    def looks_like_run(self) -> bool:
        """run.json beside split.json, a checkpoint or weights: a tlexport run, not a stray run.json."""
        return self.meta_file.is_file() and any(
            (self.path / n).is_file() for n in (L.SPLIT_JSON, L.CHECKPOINT, L.BEST))

    def require(self) -> None:
        """MissingInput unless the folder exists, NotARun unless it holds run.json (both exit 2)."""
        if not self.path.exists():
            raise MissingInput(f"run folder {self.path} does not exist")
        if not self.path.is_dir():
            raise MissingInput(f"{self.path} is a file, not a run folder")
        if not self.meta_file.is_file():
            raise NotARun(f"{self.path} is not a tlexport run (no {L.RUN_JSON})")

    def check_new(self, overwrite: bool = False) -> None:
        """Refuse to start a new run in a folder that holds one, unless `overwrite`; the message
        says how to go on. Call it holding the folder's lock: a live writer is reported by the lock
        (FolderLocked), never judged here as a run that died."""
        if overwrite or not self.holds_run():
            return
        if not self.has_checkpoint():
            raise UsageError(f"{self.path} holds a run that stopped before its first checkpoint; --resume "
                             f"{self.path} starts it again from scratch with its stored options, --overwrite "
                             "replaces it")
        raise UsageError(f"{self.path} already holds a run; use --resume {self.path} to continue it, --overwrite "
                         "to replace it, or choose another --out")

    # ---- reading ---------------------------------------------------------------------------------
    def read_meta(self) -> dict:
        """run.json, validated: arch, classes and preprocess present and well typed."""
        self.require()
        meta = _object(read_json(self.meta_file, META_MAX_BYTES, RunError), self.meta_file)
        _check_meta(meta, self.meta_file)
        return meta

    def read_split(self) -> dict | None:
        """split.json, validated (None when the run has none): a root and [relative path, label]
        rows that stay inside it."""
        if not self.split_file.is_file():
            return None
        record = _object(read_json(self.split_file, SPLIT_MAX_BYTES, RunError), self.split_file)
        _check_split(record, self.split_file)
        return record

    def read_checkpoint(self) -> dict | None:
        """checkpoint.pt as plain tensors (weights_only=True; None when there is none yet)."""
        import torch

        if not self.has_checkpoint():
            return None
        try:
            ckpt = torch.load(self.checkpoint_file, map_location="cpu", weights_only=True)
        except Exception as e:  # damaged, truncated, or not built from plain types
            raise RunError(f"{self.checkpoint_file} cannot be read ({first_line(e)})") from None
        missing = [k for k in ("model", "optimizer", "epoch", "step", "best_acc", "best_epoch", "history", "rng")
                   if not isinstance(ckpt, dict) or k not in ckpt]
        if missing:
            raise RunError(f"{self.checkpoint_file} is not a tlexport checkpoint (no {', '.join(missing)})")
        return ckpt

    # ---- writing (atomic) ------------------------------------------------------------------------
    def write_meta(self, meta: dict) -> None:
        write_json(self.meta_file, meta)

    def write_split(self, record: dict) -> None:
        write_json(self.split_file, record)

    def write_checkpoint(self, payload: dict) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes(self.checkpoint_file, buffer.getvalue())

    def write_weights(self, which: str, state: dict, meta: dict) -> None:
        """best/last weights as safetensors, `meta` (JSON-able values) in its header."""
        from safetensors.torch import save

        write_bytes(self.weights_file(which), save(state, metadata={k: json.dumps(v) for k, v in meta.items()}))

    def write_metrics(self, rows: list[dict]) -> None:
        """metrics.csv: one row per finished epoch; floats rounded to 6 digits."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.path / L.METRICS, buffer.getvalue())

    def remove_run_files(self) -> None:
        for name in L.RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def writing(self, what: str = "training run", create: bool = True):
        """Hold the folder for this process: create it (with missing parents) when `create`, take
        its lock, remove the temporary files killed writers left. Folders this call created that
        are still empty afterwards are removed again, also on failure, so a run that fails before
        writing anything leaves no trace.

        Raises:
            FolderLocked: another live process writes the folder.
            RunError: not `create` and the folder does not exist.
            UsageError: the path is a file, or the folder cannot be created.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path} is a file, not a folder")
        if not create and not self.path.is_dir():
            raise MissingInput(f"run folder {self.path} does not exist")
        with made_dirs(self.path), folder_lock(self.path, what):
            clean_stale(self.path)
            yield self


def check_outside(out: Path | str, data: Path | str, what: str = "the run folder", data_option: str = "--data") -> None:
    """Refuse an output folder inside (or equal to) the image folder a command reads: it would
    become one of the data's class folders and break every later scan of it. Checked before
    anything is created.

    Raises:
        UsageError: naming both folders.
    """
    out_path, data_path = Path(out).expanduser().resolve(), Path(data).expanduser().resolve()
    if out_path == data_path or data_path in out_path.parents:
        raise UsageError(f"--out {out} is inside {data_option} {data}: {what} would become a class folder of the data; "
                         "choose an --out outside it")


@contextlib.contextmanager
def made_dirs(path: Path):
    """Create `path` and its missing parents; on leaving, remove those of them that are empty
    (deepest first), so a failure leaves no empty folder behind in the user's tree."""
    path = Path(path)
    missing, p = [], path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a name too long is bad usage (2); a full or read-only disk is the machine's (1)
        raise os_error(e, path, "create the folder", argument=True) from None
    try:
        yield path
    finally:
        for d in missing:
            try:
                d.rmdir()  # only if still empty
            except OSError:
                break


# ---- validation ------------------------------------------------------------------------------------
def _object(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise RunError(f"{path} is not a JSON object")
    return obj


def _check_meta(meta: dict, path: Path) -> None:
    classes = meta.get("classes")
    problems = [
        (isinstance(meta.get("arch"), str) and bool(meta["arch"]), "'arch' must be an architecture name"),
        (isinstance(classes, list) and bool(classes) and all(isinstance(c, str) and c for c in classes)
         and len(set(classes)) == len(classes), "'classes' must be a list of distinct class names"),
        (not isinstance(classes, list) or not any(isinstance(c, str) and bad_class_name(c) for c in classes),
         "a class name holds a control character (it would break every format's label file)"),
        (isinstance(meta.get("preprocess"), dict), "'preprocess' must be an object"),
        *((isinstance(meta[k], dict), f"'{k}' must be an object")
          for k in ("options", "weights", "data", "metrics", "recipe") if k in meta),
        ("world_size" not in meta or (type(meta["world_size"]) is int and meta["world_size"] >= 1),
         "'world_size' must be a positive integer"),
    ]
    for ok, problem in problems:
        if not ok:
            raise RunError(f"{path} is damaged: {problem}")


def _check_split(record: dict, path: Path) -> None:
    if not isinstance(record.get("root"), str) or not record["root"]:
        raise RunError(f"{path} is damaged: 'root' must be the data folder's path")
    if record.get("layout", "flat") not in ("flat", "split"):
        raise RunError(f"{path} is damaged: 'layout' must be flat or split")
    for side in ("train", "val"):
        rows = record.get(side)
        if not isinstance(rows, list) or not all(_row_ok(r) for r in rows):
            raise RunError(f"{path} is damaged: '{side}' must be a list of [relative path, label] rows "
                           "inside the data folder")


def check_labels(record: dict, n_classes: int, path) -> None:
    """Every label of a split record indexes one of the run's `n_classes` classes: the one check
    of split.json against run.json, shared by eval, export, parity and --resume.

    Raises:
        RunError: naming the file, the label and the class count.
    """
    for side in ("train", "val"):
        for rel, label in record.get(side) or ():
            if not 0 <= label < n_classes:
                raise RunError(f"{path} is damaged: {rel!r} has label {label}, but the run has {n_classes} "
                               "classes; it does not match run.json")


def _row_ok(row) -> bool:
    if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str) and type(row[1]) is int):
        return False
    rel = row[0]
    for pure in (PurePosixPath(rel), PureWindowsPath(rel)):  # inside the root on any system
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return False
    return bool(rel) and row[1] >= 0
