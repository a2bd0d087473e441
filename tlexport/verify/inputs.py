"""The images fed to every runtime: decoded and preprocessed once, then identical float32 batches
(or seeded random inputs)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

# When neither --data nor --random is given and the run has no val split on disk.
FALLBACK_RANDOM = 16
RANDOM_SEED = 0
# The images export gates every artifact on (its int8 search and its verification alike).
GATE_IMAGES = 256  # at most, from the run's val split (spread over it, classes stay mixed)
GATE_RANDOM = 64  # seeded random inputs when the val split is not on disk
GATE_BATCH = 16  # the batch every runtime is fed while gating (int8 logits depend on it slightly)


@dataclass
class Inputs:
    """The images fed to every runtime: preprocessed once, then the identical float32 batches.

    Real images are kept as uint8 HWC crops (4x less memory) and normalised per batch with the
    same deterministic numpy code as `Preprocess.to_array`, so every runtime gets bit-identical
    batches. Random inputs are kept as float32 NCHW.
    """

    names: list[str]
    labels: np.ndarray | None
    source: str
    crops: np.ndarray | None = None
    floats: np.ndarray | None = None
    preprocess: object = None
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, start: int, stop: int) -> np.ndarray:
        if self.floats is not None:
            return np.ascontiguousarray(self.floats[start:stop])
        arr = self.preprocess.normalize(self.crops[start:stop])
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield start, self.batch(start, min(start + batch_size, len(self)))


def load_images(samples: list[tuple[Path, int]], preprocess, root: Path | None, source: str,
                max_images: int | None = None, workers: int = 4) -> Inputs:
    """Decode and crop images once; unreadable ones are skipped and listed.

    Args:
        samples: (path, label) pairs; label -1 when unknown.
        root: names are shown relative to it (None: relative to the common folder).
        max_images: keep at most this many, spread evenly over the list (keeps classes mixed).
    Returns:
        Inputs (labels None when no image has a known label).
    Raises:
        DataError: no readable image at all.
    """
    from ..data.images import BadImage

    samples = _spread(samples, max_images)
    if not samples:
        raise DataError(f"no images found for parity ({source})")
    root = root or Path(os.path.commonpath([str(p.parent) for p, _ in samples]))

    def crop(sample):
        try:
            return preprocess.crop_uint8(preprocess.load(sample[0])), None
        except BadImage as e:
            return None, str(e)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(crop, samples))
    names, labels, crops, skipped = [], [], [], []
    for (path, label), (arr, reason) in zip(samples, decoded):
        name = _relative(path, root)
        if arr is None:
            skipped.append({"image": name, "reason": reason})
            continue
        names.append(name), labels.append(label), crops.append(arr)
    if not crops:
        raise DataError(f"none of the {len(samples)} images could be read ({source}); "
                        f"first problem: {skipped[0]['image']}: {skipped[0]['reason']}")
    lab = np.asarray(labels, dtype=np.int64)
    return Inputs(names, lab if (lab >= 0).any() else None, source, crops=np.stack(crops),
                  preprocess=preprocess, skipped=skipped)


def _spread(items: list, n: int | None) -> list:
    if n is None or n >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def random_inputs(n: int, crop: int, seed: int = RANDOM_SEED, note: str = "") -> Inputs:
    """`n` seeded standard-normal images [n, 3, crop, crop] (no labels)."""
    rng = np.random.default_rng(seed)
    floats = rng.standard_normal((n, 3, crop, crop), dtype=np.float32)
    names = [f"random-{i:04d}" for i in range(n)]
    return Inputs(names, None, f"random {n} (seed {seed}){note}", floats=floats)


def gate_images(run) -> Inputs:
    """The ONE image set export's checks are measured on: the int8 search of every format and
    the verification of every artifact. The run's val split (never calibration images, which come
    from the train split), at most GATE_IMAGES spread over it; seeded random inputs (no labels)
    when the val split is not on disk. Deterministic: the same run gives the same images."""
    samples = run.samples("val")
    if samples:
        return load_images(samples, run.preprocess, None, "the run's val split", GATE_IMAGES)
    return random_inputs(GATE_RANDOM, run.preprocess.crop, note=", the run's val split is not on disk")
