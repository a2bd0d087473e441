"""Labelled image folders: classes, files, the train/val split, and checking every file once."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, MissingInput
from .check import Sample, ScanMemory, check, check_files  # noqa: F401 - check_files: evaluate's entry
from ..run.layout import bad_class_name
from .cache import check_place
from .images import is_image_file


@dataclass
class ScanResult:
    """What a folder holds: classes in index order, the two splits and the skipped files."""

    root: Path
    layout: str  # "split" (train/ and val/) or "flat" (class folders, split here)
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # {str(path): (size, mtime_ns, ctime_ns, content hash)} of the checked files: the image
    # cache's keys, so a cached epoch never reads the original files again
    digests: dict = field(default_factory=dict)
    remembered: int = 0  # verdicts taken from the remembered scan instead of decoding

    def split_record(self) -> dict:
        """Relative paths of both splits, stored in the run so `eval` can reuse its val split. The
        root is stored absolute: `--data photos/` names nothing once a later command (export's
        calibration and verification, eval) runs from another folder."""
        rel = lambda s: [[str(p.relative_to(self.root)), y] for p, y in s]  # noqa: E731
        return {"root": str(self.root.absolute()), "layout": self.layout, "train": rel(self.train), "val": rel(self.val)}

    def write_skipped(self, path: Path) -> None:
        """One `path<TAB>reason` line per skipped file, written atomically; backslash, TAB, newline
        and carriage return inside either are escaped (see `escape_field`)."""
        from ..fileio import write_text

        write_text(path, "".join(f"{escape_field(str(p))}\t{escape_field(r)}\n" for p, r in self.skipped))


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def escape_field(text: str) -> str:
    """`\\` -> `\\\\`, TAB -> `\\t`, newline -> `\\n`, CR -> `\\r`: one field on one line."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def unescape_field(text: str) -> str:
    """Inverse of escape_field."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_skipped(path: Path | str) -> list[tuple[str, str]]:
    """(path, reason) pairs of a skipped.txt."""
    rows = []
    for line in Path(path).read_text().split("\n"):
        if line:
            name, _, reason = line.partition("\t")
            rows.append((unescape_field(name), unescape_field(reason)))
    return rows


def list_classes(folder: Path) -> list[str]:
    """Class names are the visible sub-folders, sorted (as torchvision's ImageFolder does).

    Raises:
        DataError: a class folder's name holds a control character (a newline, a tab, ...): every
            format's label file is one name per line or a delimited list, so such a name would
            shift or split the labels (Triton's labels.txt, ncnn's, CSV reports).
    """
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for name in names:
        if bad_class_name(name):
            raise DataError(f"the class folder {str(folder / name)!r} has a control character in its name; "
                            "rename it (class names become lines of every format's label file)")
    return names




def class_files(folder: Path, classes: list[str]) -> list[Sample]:
    files = []
    for idx, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            rel = f.relative_to(folder / name)
            if f.is_file() and is_image_file(f) and not any(p.startswith(".") for p in rel.parts):
                files.append((f, idx))
    return files


def other_files(scanned: "ScanResult") -> list[Path]:
    """The visible files in the class folders that are not read as images (by suffix: a `.gif`, a
    `.txt`), which a scan leaves out without a verdict: `train` names them at its start."""
    folders = ([scanned.root / side / c for side in ("train", "val") for c in scanned.classes]
               if scanned.layout == "split" else [scanned.root / c for c in scanned.classes])
    return [f for folder in folders if folder.is_dir() for f in sorted(folder.rglob("*"))
            if f.is_file() and not is_image_file(f) and not any(p.startswith(".") for p in f.relative_to(folder).parts)]


def scan(root: Path | str, val_fraction: float = 0.2, seed: int = 0, verify: bool = True,
         check_size=None, *, progress=None, remember: bool = True) -> ScanResult:
    """Find classes and images under `root`, check every file, and split train/val.

    `root/train/<class>/*` + `root/val/<class>/*` is used as given; `root/<class>/*` is split
    stratified per class with `seed`.

    Args:
        check_size: optional callable(width, height) raising BadImage, applied from the header
            (`Preprocess.check_size` refuses extreme shapes).
        progress: optional callable(done, total) over the files being decoded (`check.check`).
        remember: use and update the remembered verdicts (`check.ScanMemory`).
    Raises:
        DataError: missing folder, fewer than two classes, a class without valid images, a split
            with nothing to train or validate on, ...
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingInput(f"data folder {root} does not exist")
    check_place(root)
    if not root.is_dir():
        raise MissingInput(f"{root} is not a folder (expected class sub-folders, or train/ and val/)")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = list_classes(root / "train")
        _need_classes(classes, root / "train")
        val_classes = list_classes(root / "val")
        if sorted(val_classes) != classes:
            extra = sorted(set(val_classes) ^ set(classes))
            raise DataError(f"train/ and val/ hold different classes (differing: {', '.join(extra)})")
        layout, train, val = "split", class_files(root / "train", classes), class_files(root / "val", classes)
    else:
        classes = list_classes(root)
        _need_classes(classes, root)
        layout, train, val = "flat", class_files(root, classes), []
    checked = None
    if verify:
        with ScanMemory(root, enabled=remember) as memory:
            checked = check(train + val, check_size, memory=memory, progress=progress)
        good = set(checked.good)
        train, val = [s for s in train if s in good], [s for s in val if s in good]
    _need_images(classes, train + val, root)
    if layout == "flat":
        train, val = stratified_split(train, len(classes), val_fraction, seed)
    check_split(classes, train, val, root, layout)
    if checked is None:
        return ScanResult(root, layout, classes, train, val)
    return ScanResult(root, layout, classes, train, val, checked.bad, checked.digests, checked.remembered)


def check_split(classes: list[str], train: list[Sample], val: list[Sample], root: Path, layout: str) -> None:
    """Before any training: every class has a training image and val is not empty.

    Raises:
        DataError: saying which side is empty and what to do.
    """
    where = root / "train" if layout == "split" else root
    missing = [c for i, c in enumerate(classes) if not any(y == i for _, y in train)]
    if missing:
        raise DataError(f"no training image for class(es) {', '.join(missing)} in {where}; "
                        "add images there (every class needs at least one to train on)")
    if not val:
        if layout == "split":
            raise DataError(f"{root / 'val'} holds no valid images; add some to validate on")
        raise DataError(f"no image left for validation in {root}: every class has a single valid image; "
                        "give each class at least 2 images, or provide train/ and val/ folders")


def from_record(record: dict, classes: list[str], root: Path | str, verify: bool = True,
                check_size=None, *, progress=None, remember: bool = True) -> tuple[ScanResult, list[str]]:
    """The split a run recorded in split.json, checked against the disk (what --resume trains on:
    never a new split, so no val image ends up trained on).

    Args:
        record: split.json's content ({"layout", "train", "val"} with [relative path, label] rows).
        classes: the run's classes.
        root: the data folder the paths are relative to.
        check_size, progress, remember: as for `scan`.
    Returns:
        (ScanResult of the recorded files still readable, notes saying what changed on disk:
        recorded files now missing or unreadable, new files that the resumed run does not use).
    Raises:
        DataError: a malformed record, or a split left with an empty side.
    """
    root = Path(root).expanduser()
    check_place(root)
    layout = record.get("layout", "flat") if isinstance(record, dict) else None
    try:
        rows = {s: [(root / str(rel), int(y)) for rel, y in record[s]] for s in ("train", "val")}
    except (KeyError, TypeError, ValueError):
        raise DataError("split.json is malformed (expected 'train' and 'val' lists of [path, label])") from None
    if any(not 0 <= y < len(classes) for side in rows.values() for _, y in side):
        raise DataError("split.json holds a label outside the run's classes")
    notes, skipped = [], []
    recorded = {p for side in rows.values() for p, _ in side}
    gone = sorted(p for p in recorded if not p.is_file())
    if gone:
        notes.append(f"{len(gone)} recorded file(s) are gone from disk and are left out: "
                     + ", ".join(str(p.relative_to(root)) for p in gone[:5]) + (" ..." if len(gone) > 5 else ""))
        skipped += [(p, "gone from disk since the run started") for p in gone]
    kept = {s: [(p, y) for p, y in rows[s] if p not in set(gone)] for s in rows}
    checked = None
    if verify:
        with ScanMemory(root, enabled=remember) as memory:
            checked = check(kept["train"] + kept["val"], check_size, memory=memory, progress=progress)
        good = set(checked.good)
        kept = {side: [s for s in kept[side] if s in good] for side in kept}
        skipped += checked.bad
        if len(skipped) > len(gone):
            notes.append(f"{len(skipped) - len(gone)} recorded file(s) became unreadable and are left out")
    on_disk = {p for base in ((root / "train", root / "val") if layout == "split" else (root,))
               if base.is_dir() for p, _ in class_files(base, [c for c in classes if (base / c).is_dir()])}
    added = sorted(on_disk - recorded)
    if added:
        notes.append(f"{len(added)} new file(s) on disk are not used (resume keeps the recorded split; "
                     "start a new run to train on them): "
                     + ", ".join(str(p.relative_to(root)) for p in added[:5]) + (" ..." if len(added) > 5 else ""))
    check_split(classes, kept["train"], kept["val"], root, layout)
    digests, remembered = (checked.digests, checked.remembered) if checked else ({}, 0)
    return ScanResult(root, layout, list(classes), kept["train"], kept["val"], skipped, digests, remembered), notes


def stratified_split(samples: list[Sample], n_classes: int, val_fraction: float, seed: int):
    """Split each class separately so val keeps the class balance; at least one image of each
    class stays in train, and every class with two or more images gets one in val."""
    rng = random.Random(seed)
    train, val = [], []
    for c in range(n_classes):
        items = [s for s in samples if s[1] == c]
        rng.shuffle(items)
        n_val = min(max(1, round(len(items) * val_fraction)), len(items) - 1)
        val += items[:n_val]
        train += items[n_val:]
    return sorted(train), sorted(val)


def _need_classes(classes: list[str], folder: Path) -> None:
    if not classes:
        raise DataError(
            f"{folder} has no class folders; expected {folder}/<class>/<image> "
            f"or {folder}/train/<class>/... and {folder}/val/<class>/..."
        )
    if len(classes) < 2:
        raise DataError(f"{folder} has only one class ({classes[0]}); a classifier needs at least two")


def _need_images(classes: list[str], samples: list[Sample], root: Path) -> None:
    counts = [0] * len(classes)
    for _, y in samples:
        counts[y] += 1
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DataError(f"class folder(s) without valid images in {root}: {', '.join(empty)}")


def labelled_folder(folder: Path | str, classes: list[str], *, unknown: str = "error"
                    ) -> tuple[list[Sample], Path, list[str]]:
    """Images of `folder/<class>/` labelled with the run's class indices (`folder/val/` when the
    folder has train/ and val/). The one reading of a labelled folder, for eval, parity and
    export verification.

    Args:
        classes: the run's classes, in index order.
        unknown: what a sub-folder that is not a class of the run means: "error" (eval), or
            "unlabelled" (its images get label -1; a folder without sub-folders gives no labels).
    Returns:
        (samples, the folder the names are relative to, notes for the report)
    Raises:
        DataError: missing folder; unknown classes or no class folders when unknown="error".
    """
    from .images import iter_image_files

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingInput(f"data folder {folder} does not exist")
    notes = []
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        folder = folder / "val"
        notes.append(f"using the val/ split of the data folder ({folder})")
    found = list_classes(folder)
    index = {c: i for i, c in enumerate(classes)}
    strange = [c for c in found if c not in index]
    if unknown == "error":
        if strange:
            raise DataError(f"{folder} has classes the model was not trained on: {', '.join(sorted(strange))}")
        if not found:
            raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    if not found:
        return [(p, -1) for p in iter_image_files([folder])], folder, notes + ["no class folders: no labels"]
    if strange:
        notes.append(f"folders that are not classes of the run (unlabelled): {', '.join(strange[:5])}")
    samples = [(p, index.get(found[j], -1)) for p, j in class_files(folder, found)]
    return samples, folder, notes
