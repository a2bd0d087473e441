"""Numeric parity between runtimes: the same preprocessed batches through every runtime and
artifact, compared per image with a reference (torch-eager fp32 on CPU by default).

`compare()` is pure numpy and holds every metric and gate; `parity()` gathers the inputs, runs
the runtimes and returns a `ParityReport`. The library never decides the exit code: the CLI does,
from `report.passed`.

Gates by precision (see `gates_for`):
- fp32: every logit within `atol + rtol * |ref|` (as `np.allclose`) and 100 % top-1 agreement;
- fp16: all logits finite and top-1 agreement >= 99 %; errors are reported against 1e-2 / 1e-2;
- int8: top-1 agreement >= 98 % and, when labels are known, accuracy drop <= 1 point.
Every precision also needs the right output shape and dtype, batch independence within its
tolerance, and metadata (classes, preprocessing) equal to the run's.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, ParityError, RuntimeUnavailable, UsageError

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
# When neither --data nor --random is given and the run has no val split on disk.
FALLBACK_RANDOM = 16
RANDOM_SEED = 0
# How many images are also run alone to check that a batch does not change their logits.
BATCH_CHECK_IMAGES = 3
TOP_K = 5
MAX_FLIPS_IN_MESSAGE = 3


# ---- gates -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gates:
    """What one precision must satisfy.

    Args:
        atol, rtol: elementwise tolerance on logits (`|out - ref| <= atol + rtol * |ref|`).
        require_allclose: whether the tolerance is a gate (fp32) or only reported (fp16, int8).
        min_top1: minimum top-1 agreement with the reference, in percent.
        max_accuracy_drop: maximum accuracy loss in points when labels are known (None: no gate).
        batch_atol, batch_rtol: tolerance between an image run alone and inside a batch.
    """

    atol: float
    rtol: float
    require_allclose: bool
    min_top1: float
    max_accuracy_drop: float | None = None
    batch_atol: float = DEFAULT_ATOL
    batch_rtol: float = DEFAULT_RTOL


def gates_for(precision: str, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Gates:
    """The gates of `precision` ("fp32" | "fp16" | "int8"), with the user's fp32 tolerance.

    Returns:
        Gates. fp16 and int8 report errors against looser tolerances (never tighter than the
        user's), because half precision and quantisation change logits by design.
    """
    if precision == "fp32":
        return Gates(atol, rtol, True, 100.0, None, atol, rtol)
    if precision == "fp16":
        loose_a, loose_r = max(atol, 1e-2), max(rtol, 1e-2)
        return Gates(loose_a, loose_r, False, 99.0, None, loose_a, loose_r)
    if precision == "int8":
        # Static QDQ scales are fixed, so batch independence holds up to one quantisation step
        # where an accumulation lands on a rounding boundary; 5e-2 allows that, not real bugs.
        loose_a, loose_r = max(atol, 1e-1), max(rtol, 1e-1)
        return Gates(loose_a, loose_r, False, 98.0, 1.0, 5e-2, 5e-2)
    raise UsageError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")


# ---- results -----------------------------------------------------------------------------------
@dataclass
class RuntimeResult:
    """How one runtime x precision x device compares with the reference.

    Metrics are None when the runtime was skipped or its output could not be compared.
    `accuracy` and `accuracy_delta` are in percent / points; `top5_overlap` is in [0, 1].
    """

    runtime: str
    precision: str
    device: str
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine_min: float | None = None
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    accuracy: float | None = None
    accuracy_delta: float | None = None
    flips: list[dict] = field(default_factory=list)
    passed: bool | None = None
    skipped_reason: str | None = None
    failures: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    dtype: str | None = None
    finite: bool | None = None
    within_tolerance: bool | None = None
    atol: float | None = None
    rtol: float | None = None
    batch_independent: bool | None = None
    metadata_ok: bool | None = None
    artifact: str | None = None
    seconds: float | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}/{self.device}"

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self.passed = False

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))


@dataclass
class ParityReport:
    """Everything `tlexport parity` found. `passed` is True only when at least one runtime was
    compared and every compared runtime passed its gates (skipped runtimes do not count)."""

    passed: bool
    reference: str
    images: int
    results: list[RuntimeResult]
    source: str = ""
    labelled: bool = False
    reference_accuracy: float | None = None
    skipped_images: list[dict] = field(default_factory=list)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    run_dir: str | None = None
    export_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def compared(self) -> list[RuntimeResult]:
        return [r for r in self.results if r.skipped_reason is None]

    @property
    def skipped(self) -> list[RuntimeResult]:
        return [r for r in self.results if r.skipped_reason is not None]

    def to_dict(self) -> dict:
        """The stable JSON schema of `--json` (non-finite floats become null)."""
        d = {
            "passed": self.passed, "reference": self.reference, "images": self.images,
            "results": [r.to_dict() for r in self.results],
            "source": self.source, "labelled": self.labelled,
            "reference_accuracy": self.reference_accuracy,
            "skipped_images": self.skipped_images,
            "tolerances": {"atol": self.atol, "rtol": self.rtol},
            "run_dir": self.run_dir, "export_dir": self.export_dir,
            "notes": self.notes, "environment": self.environment,
        }
        return _json_safe(d)


def _json_safe(obj):
    from .report import json_safe

    return json_safe(obj)


# ---- the pure comparison -----------------------------------------------------------------------
def compare(reference_logits, logits, labels, names, precision, gates: Gates, *, classes=None,
            runtime: str = "", device: str = "cpu") -> RuntimeResult:
    """Compare one runtime's logits with the reference's on the same images (pure numpy).

    Args:
        reference_logits: [N, K] float array from the reference runtime.
        logits: [N, K] array from the runtime under test (shape/dtype are checked here).
        labels: [N] true class indices (-1 = unknown), or None when no label is known.
        names: N image names, used to list the images whose top-1 flips.
        precision: "fp32" | "fp16" | "int8" (recorded; the gates come in `gates`).
        gates: the Gates of that precision (`gates_for`).
        classes: class names for the flip list (indices are used when None).
    Returns:
        RuntimeResult with metrics filled in, `passed` and human-readable `failures`.
    """
    res = RuntimeResult(runtime, precision, device, atol=gates.atol, rtol=gates.rtol, passed=True)
    ref, out = np.asarray(reference_logits), np.asarray(logits)
    res.shape, res.dtype = list(out.shape), str(out.dtype)
    if out.ndim != 2 or out.shape != ref.shape:
        res.fail(f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
        return res
    if out.dtype != np.float32:
        res.fail(f"output dtype {out.dtype}, expected float32")
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    res.finite = bool(np.isfinite(out64).all())
    if not res.finite:
        bad_rows = int((~np.isfinite(out64)).any(axis=1).sum())
        res.fail(f"non-finite logits (NaN/Inf) for {bad_rows} of {len(out)} images")
    _error_metrics(res, ref64, out64, gates)
    _agreement_metrics(res, ref64, out64, names, classes, gates)
    _accuracy_metrics(res, ref64, out64, labels, gates)
    return res


def _error_metrics(res: RuntimeResult, ref: np.ndarray, out: np.ndarray, gates: Gates) -> None:
    """max/mean abs error, max relative error, min cosine, and the elementwise tolerance gate.

    max_rel is each image's largest error divided by its largest |reference logit| (elementwise
    ratios explode on logits near zero and say nothing about the prediction)."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(out - ref)
        res.max_abs = float(np.max(diff)) if res.finite else math.inf
        res.mean_abs = float(np.mean(diff)) if res.finite else math.inf
        scale = np.maximum(np.max(np.abs(ref), axis=1), 1e-12)
        res.max_rel = float(np.max(np.max(diff, axis=1) / scale)) if res.finite else math.inf
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cos = np.sum(ref * out, axis=1) / np.maximum(norms, 1e-12)
        res.cosine_min = float(np.min(cos)) if res.finite else math.nan
        ok = diff <= gates.atol + gates.rtol * np.abs(ref)  # NaN compares False: outside
    res.within_tolerance = bool(ok.all())
    if gates.require_allclose and not res.within_tolerance:
        res.fail(f"{int((~ok).sum())} of {ok.size} logits outside atol={gates.atol:g} "
                 f"rtol={gates.rtol:g} (max abs error {res.max_abs:.3g})")


def _agreement_metrics(res, ref, out, names, classes, gates: Gates) -> None:
    """top-1 agreement (%), mean top-5 overlap and the flipped images."""
    n, k = ref.shape
    ref_top1, out_top1 = ref.argmax(axis=1), out.argmax(axis=1)
    res.top1_agreement = 100.0 * float(np.mean(ref_top1 == out_top1))
    kk = min(TOP_K, k)
    ref_top, out_top = np.argsort(-ref, axis=1)[:, :kk], np.argsort(-out, axis=1)[:, :kk]
    overlap = [len(set(a) & set(b)) / kk for a, b in zip(ref_top.tolist(), out_top.tolist())]
    res.top5_overlap = float(np.mean(overlap))
    name_of = (lambda i: classes[i]) if classes else (lambda i: int(i))  # noqa: E731
    for i in np.flatnonzero(ref_top1 != out_top1):
        res.flips.append({
            "image": str(names[i]), "reference": name_of(int(ref_top1[i])),
            "runtime": name_of(int(out_top1[i])),
            # How close the reference was to a tie: small margins flip on rounding alone.
            "reference_margin": float(_margin(ref[i])),
        })
    if res.top1_agreement < gates.min_top1:
        shown = ", ".join(f["image"] for f in res.flips[:MAX_FLIPS_IN_MESSAGE])
        more = "..." if len(res.flips) > MAX_FLIPS_IN_MESSAGE else ""
        res.fail(f"top-1 agreement {res.top1_agreement:.2f}% < {gates.min_top1:g}% "
                 f"({len(res.flips)} of {n} images flip: {shown}{more})")


def _margin(row: np.ndarray) -> float:
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0]) if len(top2) == 2 else math.inf


def _accuracy_metrics(res, ref, out, labels, gates: Gates) -> None:
    """Accuracy (%) of the runtime and its difference from the reference, when labels are known."""
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.size == 0 or (labels < 0).any():
        return
    ref_acc = 100.0 * float(np.mean(ref.argmax(axis=1) == labels))
    res.accuracy = 100.0 * float(np.mean(out.argmax(axis=1) == labels))
    res.accuracy_delta = res.accuracy - ref_acc
    drop = gates.max_accuracy_drop
    if drop is not None and res.accuracy_delta < -drop - 1e-9:
        res.fail(f"accuracy {res.accuracy:.2f}% is {-res.accuracy_delta:.2f} points below the "
                 f"reference's {ref_acc:.2f}% (allowed: {drop:g})")


# ---- metadata ----------------------------------------------------------------------------------
def check_metadata(meta: dict | None, classes: list[str], preprocess: dict, arch: str | None = None) -> list[str]:
    """Problems between an artifact's embedded metadata and the run's (empty list: all equal).

    Classes must be equal in order; resize/crop/interpolation exactly; mean/std numerically
    (np.isclose), since JSON round trips may print floats differently.
    """
    if not meta:
        return ["the artifact carries no tlexport metadata (classes, preprocessing)"]
    problems = []
    art_classes = meta.get("classes")
    if art_classes is None:
        problems.append("no class names in the artifact")
    elif list(art_classes) != list(classes):
        problems.append(_class_problem(list(art_classes), list(classes)))
    pre = meta.get("preprocess")
    if not isinstance(pre, dict):
        problems.append("no preprocessing in the artifact")
    else:
        problems += _preprocess_problems(pre, preprocess)
    if arch and meta.get("arch") and meta["arch"] != arch:
        problems.append(f"architecture differs: artifact {meta['arch']}, run {arch}")
    return problems


def _class_problem(art: list[str], run: list[str]) -> str:
    if sorted(art) == sorted(run):
        i = next(i for i, (a, b) in enumerate(zip(art, run)) if a != b)
        return f"class order differs (index {i} is {art[i]!r} in the artifact, {run[i]!r} in the run)"
    if len(art) != len(run):
        return f"class count differs: artifact {len(art)}, run {len(run)}"
    diff = sorted(set(art) ^ set(run))
    return f"class names differ ({', '.join(map(str, diff[:5]))})"


def _preprocess_problems(art: dict, run: dict) -> list[str]:
    problems = []
    for key in ("resize", "crop", "interpolation"):
        if art.get(key) != run.get(key):
            problems.append(f"{key} differs: artifact {art.get(key)!r}, run {run.get(key)!r}")
    for key in ("mean", "std"):
        a, b = art.get(key), run.get(key)
        try:
            same = len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-6, atol=1e-7))
        except (TypeError, ValueError):
            same = False
        if not same:
            problems.append(f"{key} differs: artifact {a}, run {b}")
    return problems


# ---- inputs ------------------------------------------------------------------------------------
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
    from .images import BadImage, load_rgb

    samples = _spread(samples, max_images)
    if not samples:
        raise DataError(f"no images found for parity ({source})")
    root = root or Path(os.path.commonpath([str(p.parent) for p, _ in samples]))

    def crop(sample):
        try:
            return preprocess.crop_uint8(load_rgb(sample[0])), None
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


def folder_samples(folder: Path, run_classes: list[str]) -> tuple[list[tuple[Path, int]], Path, list[str]]:
    """Images of `folder` with labels from class sub-folders named like the run's classes.

    A folder with train/ and val/ uses val/. Sub-folders that are not run classes give label -1;
    a flat folder gives no labels.
    Returns:
        (samples, root for names, notes)
    """
    from .data import class_files, list_classes
    from .images import iter_image_files

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"--data {folder} is not a folder")
    notes = []
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        folder = folder / "val"
        notes.append(f"using the val/ split of the data folder ({folder})")
    subdirs = list_classes(folder)
    if not subdirs:
        return [(p, -1) for p in iter_image_files([folder])], folder, notes + ["no class folders: no labels"]
    index = {c: i for i, c in enumerate(run_classes)}
    unknown = [c for c in subdirs if c not in index]
    if unknown:
        notes.append(f"folders that are not classes of the run (unlabelled): {', '.join(unknown[:5])}")
    samples = [(p, index.get(subdirs[j], -1)) for p, j in class_files(folder, subdirs)]
    return samples, folder, notes


# ---- running runtimes --------------------------------------------------------------------------
@contextlib.contextmanager
def no_tf32():
    """Disable TF32 while parity runs: on Ampere+ GPUs it silently rounds fp32 matmuls/convs to
    10-bit mantissas (errors ~1e-3 relative), which would make fp32 CUDA runs fail 1e-4 gates."""
    try:
        import torch
    except ImportError:  # an ONNX-only install: nothing to switch
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_all(runtime, inputs: Inputs, batch_size: int, progress=None) -> np.ndarray | list:
    """Feed every batch to a loaded runtime and synchronise.

    Returns:
        [N, K] logits, or the first badly shaped batch output (compare() then reports it).
    """
    outs, sizes = [], []
    for start, batch in inputs.batches(batch_size):
        outs.append(np.asarray(runtime.run(batch)))
        sizes.append(len(batch))
        if progress:
            progress(runtime.label, start + len(batch), len(inputs))
    runtime.synchronize()
    k = outs[0].shape[-1] if outs[0].ndim else None
    bad = [o for o, n in zip(outs, sizes) if o.ndim != 2 or len(o) != n or o.shape[1] != k]
    return bad[0] if bad else np.concatenate(outs)


def check_batch_independence(runtime, inputs: Inputs, batched: np.ndarray, gates: Gates) -> str | None:
    """Run the first few images alone and compare with their rows from the batched run.

    Returns:
        None when they agree within the precision's batch tolerance, else the problem.
    """
    worst, worst_name = 0.0, None
    for i in range(min(BATCH_CHECK_IMAGES, len(inputs))):
        alone = np.asarray(runtime.run(inputs.batch(i, i + 1)), dtype=np.float64)
        runtime.synchronize()
        row = batched[i : i + 1].astype(np.float64)
        if alone.shape != row.shape:
            return f"batch of 1 gives shape {tuple(alone.shape)}, expected {tuple(row.shape)}"
        excess = np.abs(alone - row) - (gates.batch_atol + gates.batch_rtol * np.abs(row))
        if not np.isfinite(excess).all() or excess.max() > 0:
            err = float(np.nan_to_num(np.abs(alone - row), nan=np.inf).max())
            if err >= worst:
                worst, worst_name = err, inputs.names[i]
    if worst_name is None:
        return None
    return f"not batch independent: {worst_name} alone differs from its batched logits by {worst:.3g}"


def evaluate_runtime(runtime, inputs: Inputs, ref_logits: np.ndarray, run, atol: float, rtol: float,
                     batch_size: int, progress=None) -> RuntimeResult:
    """Load, run and compare one runtime; any error while loading or running is a failure of
    that runtime (a broken artifact must not pass), recorded so that the others still run."""
    import time

    base = RuntimeResult(runtime.name, runtime.precision, runtime.device,
                         artifact=str(runtime.artifact) if runtime.artifact else None)
    try:
        runtime.load()
    except Exception as e:  # noqa: BLE001 - reported per runtime, the others still run
        # discover() already skipped what cannot run on this machine; an artifact that still
        # fails to load is broken (truncated, corrupt), and a CI gate must not pass it silently.
        base.fail(f"cannot load: {_one_line(e)}")
        return base
    gates = gates_for(runtime.precision, atol, rtol)
    t0 = time.perf_counter()
    try:
        logits = run_all(runtime, inputs, batch_size, progress)
        res = compare(ref_logits, logits, inputs.labels, inputs.names, runtime.precision, gates,
                      classes=run.classes, runtime=runtime.name, device=runtime.device)
        if res.shape == list(ref_logits.shape):
            problem = check_batch_independence(runtime, inputs, np.asarray(logits), gates)
            res.batch_independent = problem is None
            if problem:
                res.fail(problem)
    except Exception as e:  # noqa: BLE001
        base.fail(f"failed while running: {_one_line(e)}")
        return base
    res.artifact, res.seconds = base.artifact, time.perf_counter() - t0
    if runtime.artifact is not None:  # torch-eager runs the run's own weights: nothing embedded
        problems = check_metadata(runtime.metadata, run.classes, run.meta["preprocess"], run.arch)
        res.metadata_ok = not problems
        for p in problems:
            res.fail(f"metadata: {p}")
    return res


def _one_line(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {text[:200]}"


# ---- the public entry point --------------------------------------------------------------------
def parity(export_dir, *, data=None, random=None, reference: str = "torch-eager", runtimes=None,
           devices=("cpu",), precisions=None, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
           max_images: int | None = None, batch_size: int = 16, run_dir=None,
           progress=None) -> ParityReport:
    """Compare every runtime x precision x device of an export folder with a reference.

    Args:
        export_dir: folder written by `tlexport export` (artifacts + manifest.json).
        data: image folder (class sub-folders named like the run's classes give labels).
        random: number of seeded random-normal inputs instead of images.
        reference: runtime name, or "name/precision/device" (default torch-eager fp32 on CPU).
        runtimes: runtime names to compare (None: all that the export folder allows).
        devices: devices to try ("cpu", "cuda"); CUDA runtimes without a GPU are skipped.
        precisions: precisions to compare ("fp32", "fp16", "int8"; None: all exported).
        atol, rtol: the fp32 tolerance on logits.
        max_images: use at most this many images (spread over the list).
        batch_size: batch fed to every runtime.
        run_dir: the run the export came from (default: found from the manifest / parent).
        progress: optional callable(label, done, total) after each batch.
    Returns:
        ParityReport (the caller turns `passed` into an exit code).
    Raises:
        UsageError: contradictory or invalid options; DataError: no usable images;
        ParityError: the reference cannot run or produces non-finite logits.
    """
    export_dir = Path(export_dir).expanduser()
    _validate(export_dir, data, random, devices, atol, rtol, max_images, batch_size, runtimes)
    bad = [p for p in precisions or () if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise UsageError(f"unknown precision {', '.join(bad)}; expected fp32, fp16 or int8")
    from . import runtimes as rt  # after validation: bad usage is reported without heavy imports
    from .models import load_run

    run = load_run(find_run_dir(export_dir, run_dir))
    inputs, notes = gather_inputs(run, data, random, max_images)
    with no_tf32():
        ref_rt = _reference(rt, export_dir, run, reference)
        ref_logits = _reference_logits(ref_rt, inputs, batch_size, progress)
        found, skipped = rt.discover(export_dir, run_dir=run.dir, names=runtimes, devices=tuple(devices),
                                     precisions=tuple(precisions) if precisions else None)
        results = [evaluate_runtime(r, inputs, ref_logits, run, atol, rtol, batch_size, progress)
                   for r in found if _key(r) != _key(ref_rt)]
    results += [RuntimeResult(s.name, s.precision, s.device, skipped_reason=s.reason) for s in skipped]
    compared = [r for r in results if r.skipped_reason is None]
    if not compared:
        notes.append("no runtime could be compared with the reference")
    labels = inputs.labels
    ref_acc = None
    if labels is not None and (labels >= 0).all():
        ref_acc = 100.0 * float(np.mean(ref_logits.argmax(axis=1) == labels))
    return ParityReport(
        passed=bool(compared) and all(r.passed for r in compared), reference=ref_rt.label,
        images=len(inputs), results=results, source=inputs.source, labelled=labels is not None,
        reference_accuracy=ref_acc, skipped_images=inputs.skipped, atol=atol, rtol=rtol,
        run_dir=str(run.dir), export_dir=str(export_dir), notes=notes, environment=_environment(),
    )


def _key(r) -> tuple:
    return (r.name, r.precision, r.device)


def _validate(export_dir, data, random, devices, atol, rtol, max_images, batch_size, names) -> None:
    if not export_dir.is_dir():
        raise UsageError(f"export folder {export_dir} does not exist")
    if data is not None and random is not None:
        raise UsageError("give either --data or --random, not both")
    if random is not None and int(random) <= 0:
        raise UsageError(f"--random must be a positive number of inputs, got {random}")
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    if max_images is not None and max_images <= 0:
        raise UsageError(f"--max-images must be positive, got {max_images}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    bad = [d for d in devices if d not in ("cpu", "cuda")]
    if bad or not devices:
        raise UsageError(f"unknown device {', '.join(bad) or '(none)'}; expected cpu and/or cuda")
    if names:
        from .runtimes import RUNTIME_NAMES

        unknown = [n for n in names if n not in RUNTIME_NAMES]
        if unknown:
            raise UsageError(f"unknown runtime {', '.join(unknown)}; known: {', '.join(RUNTIME_NAMES)}")


def find_run_dir(export_dir: Path, run_dir=None) -> Path:
    """The run an export came from: explicit, else the manifest's record, else the parent
    (tlexport export writes RUN/export by default), else the export folder itself."""
    import json

    if run_dir is not None:
        return Path(run_dir).expanduser()
    manifest = export_dir / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            m = {}
        run = m.get("run") if isinstance(m.get("run"), dict) else {}
        for cand in (m.get("run_dir"), run.get("dir"), run.get("run_dir")):
            if cand and (Path(cand) / "run.json").is_file():
                return Path(cand)
    for cand in (export_dir.parent, export_dir):
        if (cand / "run.json").is_file():
            return cand
    raise UsageError(f"cannot find the training run of {export_dir} (no run.json in its manifest's "
                     "run dir or parent folder); pass --run-dir")


def gather_inputs(run, data, random, max_images) -> tuple[Inputs, list[str]]:
    """--data folder, --random N, or the run's val split (random inputs when it has none)."""
    pre, notes = run.preprocess, []
    if random is not None:
        return random_inputs(int(random), pre.crop), notes
    if data is not None:
        samples, root, notes = folder_samples(Path(data), run.classes)
        return load_images(samples, pre, root, f"data {root}", max_images), notes
    samples = run.samples("val")
    if not samples:
        n = max_images or FALLBACK_RANDOM
        notes.append("the run's val split is not on disk: random inputs used (pass --data DIR)")
        return random_inputs(n, pre.crop, note=", no val split on disk"), notes
    return load_images(samples, pre, None, "the run's val split", max_images), notes


def _reference(rt, export_dir: Path, run, reference: str):
    """The reference runtime: torch-eager fp32 CPU by default, or any discovered one."""
    parts = reference.split("/")
    name = parts[0]
    precision = parts[1] if len(parts) > 1 else "fp32"
    device = parts[2] if len(parts) > 2 else "cpu"
    if name not in rt.RUNTIME_NAMES or len(parts) > 3:
        raise UsageError(f"unknown reference {reference!r}; use a runtime name ({', '.join(rt.RUNTIME_NAMES)}) "
                         "optionally as name/precision/device")
    if (name, precision) == ("torch-eager", "fp32"):
        ref = rt.reference_runtime(run.dir, device=device)
    else:
        found, skipped = rt.discover(export_dir, run_dir=run.dir, names=[name], devices=(device,),
                                     precisions=(precision,))
        match = [r for r in found if (r.precision, r.device) == (precision, device)]
        if not match:
            why = "; ".join(s.reason for s in skipped) or "no such artifact in the export folder"
            raise ParityError(f"reference {name}/{precision}/{device} is not available: {why}")
        ref = match[0]
    try:
        return ref.load()
    except RuntimeUnavailable as e:
        raise ParityError(f"reference {name}/{precision}/{device} is not available: {e}") from None


def _reference_logits(ref, inputs: Inputs, batch_size: int, progress) -> np.ndarray:
    logits = run_all(ref, inputs, batch_size, progress)
    if logits.ndim != 2 or len(logits) != len(inputs):
        raise ParityError(f"reference {ref.label} returned shape {tuple(logits.shape)}")
    if not np.isfinite(logits).all():
        raise ParityError(f"reference {ref.label} produced non-finite logits; nothing to compare with")
    return logits.astype(np.float32, copy=False)


def _environment() -> dict:
    from .report import environment

    return environment()
