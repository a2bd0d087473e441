"""Labelled image folders: classes, files, the train/val split, and checking every file once."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .images import BadImage, is_image_file, load_rgb

Sample = tuple[Path, int]


@dataclass
class ScanResult:
    """What a folder holds: classes in index order, the two splits and the skipped files."""

    root: Path
    layout: str  # "split" (train/ and val/) or "flat" (class folders, split here)
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def split_record(self) -> dict:
        """Relative paths of both splits, stored in the run so `eval` can reuse its val split."""
        rel = lambda s: [[str(p.relative_to(self.root)), y] for p, y in s]  # noqa: E731
        return {"root": str(self.root), "layout": self.layout, "train": rel(self.train), "val": rel(self.val)}

    def write_skipped(self, path: Path) -> None:
        """One `path<TAB>reason` line per skipped file, written atomically."""
        from ..fileio import write_text

        write_text(path, "".join(f"{p}\t{reason}\n" for p, reason in self.skipped))


def list_classes(folder: Path) -> list[str]:
    """Class names are the visible sub-folders, sorted (as torchvision's ImageFolder does)."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_files(folder: Path, classes: list[str]) -> list[Sample]:
    files = []
    for idx, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            rel = f.relative_to(folder / name)
            if f.is_file() and is_image_file(f) and not any(p.startswith(".") for p in rel.parts):
                files.append((f, idx))
    return files


def check_files(samples: list[Sample], workers: int = 4) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Decode every file once; return the good samples and (path, reason) for the bad ones."""

    def probe(sample):
        try:
            load_rgb(sample[0])
            return None
        except BadImage as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(probe, samples))
    good = [s for s, r in zip(samples, reasons) if r is None]
    bad = [(s[0], r) for s, r in zip(samples, reasons) if r is not None]
    return good, bad


def scan(root: Path | str, val_fraction: float = 0.2, seed: int = 0, verify: bool = True) -> ScanResult:
    """Find classes and images under `root`, check every file, and split train/val.

    `root/train/<class>/*` + `root/val/<class>/*` is used as given; `root/<class>/*` is split
    stratified per class with `seed`.

    Raises:
        DataError: missing folder, fewer than two classes, a class without valid images, ...
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected class sub-folders, or train/ and val/)")
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
    skipped: list[tuple[Path, str]] = []
    if verify:
        train, bad_train = check_files(train)
        val, bad_val = check_files(val)
        skipped = bad_train + bad_val
    _need_images(classes, train + val, root)
    if layout == "flat":
        train, val = stratified_split(train, len(classes), val_fraction, seed)
    elif not val:
        raise DataError(f"{root / 'val'} holds no valid images")
    return ScanResult(root, layout, classes, train, val, skipped)


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
        raise DataError(f"data folder {folder} does not exist")
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
