"""Numeric parity between runtimes: the same preprocessed batches through every runtime and
artifact, compared per image with a reference (torch-eager fp32 on CPU by default).

`compare` holds every metric and gate (pure numpy), `inputs` the images; `parity()` here runs the
runtimes and returns a `ParityReport`. The library never decides the exit code: the CLI does,
from `report.passed`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ParityError, RuntimeUnavailable, UsageError, first_line
from ..keywords import options_or_keywords
from ..render import json_safe
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, Gates, RuntimeResult, compare, gates_for, record_metadata
from .inputs import FALLBACK_RANDOM, Inputs, load_images, random_inputs

# How many images are also run alone to check that a batch does not change their logits.
BATCH_CHECK_IMAGES = 3


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
        return json_safe(d)


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
        base.fail(f"cannot load: {first_line(e, with_type=True)}")
        return base
    gates = gates_for(runtime.precision, atol, rtol)
    t0 = time.perf_counter()
    try:
        logits = run_all(runtime, inputs, batch_size, progress)
        res = compare(ref_logits, logits, inputs, runtime.precision, gates,
                      classes=run.classes, runtime=runtime.name, device=runtime.device)
        if res.shape == list(ref_logits.shape):
            problem = check_batch_independence(runtime, inputs, np.asarray(logits), gates)
            res.batch_independent = problem is None
            if problem:
                res.fail(problem)
    except Exception as e:  # noqa: BLE001
        base.fail(f"failed while running: {first_line(e, with_type=True)}")
        return base
    res.artifact, res.seconds = base.artifact, time.perf_counter() - t0
    if runtime.artifact is not None:  # torch-eager runs the run's own weights: nothing embedded
        # the schema is checked as the metadata is read (one line naming the field)
        record_metadata(res, lambda: runtime.metadata, run)
    return res


# ---- the public entry point --------------------------------------------------------------------
@dataclass(frozen=True)
class ParityOptions:
    """What `parity()` compares, and how (`tlexport parity`'s options).

    Args:
        data: image folder (class sub-folders named like the run's classes give labels).
        random: number of seeded random-normal inputs instead of images.
        reference: runtime name, or "name/precision/device" (default torch-eager fp32 on CPU).
        runtimes: runtime names to compare (None: all that the export folder allows).
        devices: devices to try ("cpu", "cuda"); CUDA runtimes without a GPU are skipped.
        precisions: precisions to compare ("fp32", "fp16", "int8"; None: all exported).
        atol, rtol: the fp32 tolerance on logits (None: the architecture's, from the registry).
        max_images: use at most this many images (spread over the list).
        batch_size: batch fed to every runtime.
        run_dir: the run the export came from (default: found from the manifest / parent).
        trust_code: also run TorchScript / .pt2 files found in the folder (loading them executes
            code stored in them); without it they are listed as skipped.
    """

    data: Path | str | None = None
    random: int | None = None
    reference: str = "torch-eager"
    runtimes: tuple | list | None = None
    devices: tuple | list = ("cpu",)
    precisions: tuple | list | None = None
    atol: float | None = None
    rtol: float | None = None
    max_images: int | None = None
    batch_size: int = 16
    run_dir: Path | str | None = None
    trust_code: bool = False


def parity(export_dir, options: ParityOptions | None = None, *, progress=None, inputs: Inputs | None = None,
           **keywords) -> ParityReport:
    """Compare every runtime x precision x device of an export folder with a reference.

    Args:
        export_dir: folder written by `tlexport export` (artifacts + manifest.json).
        options: a `ParityOptions`, or instead its fields as keywords (`data=`, `runtimes=`,
            `atol=`, ...: `parity(folder, max_images=8)`).
        progress: optional callable(label, done, total) after each batch.
        inputs: the images, already loaded (export's verification passes the ones its int8
            search was gated on, `inputs.gate_images`); data, random and max_images then unused.
    Returns:
        ParityReport (the caller turns `passed` into an exit code).
    Raises:
        UsageError: contradictory or invalid options; DataError: no usable images;
        ParityError: the reference cannot run or produces non-finite logits.
        TypeError: both `options` and keywords, or an unknown keyword.
    """
    o = options_or_keywords(ParityOptions, options, keywords, "parity")
    return _parity(Path(export_dir).expanduser(), o, progress, inputs)


def _parity(export_dir: Path, o: ParityOptions, progress, inputs: Inputs | None) -> ParityReport:
    from .. import runtimes as rt  # after validation: bad usage is reported without heavy imports
    from ..models import load_run
    from ..tables import archs
    from ..tables.artifacts import check_devices, check_precisions, find_run_dir

    _validate(export_dir, o.data, o.random, o.atol, o.rtol, o.max_images, o.batch_size)
    devices = check_devices(o.devices)
    precisions = check_precisions(o.precisions) if o.precisions else None
    runtimes = list(rt.check_names(o.runtimes)) if o.runtimes else None
    run = load_run(find_run_dir(export_dir, o.run_dir))
    spec = archs.get(run.arch)
    atol = spec.atol if o.atol is None else o.atol
    rtol = spec.rtol if o.rtol is None else o.rtol
    batch_size, trust_code = o.batch_size, o.trust_code
    inputs, notes = (inputs, []) if inputs is not None else gather_inputs(run, o.data, o.random, o.max_images)
    with no_tf32():
        ref_rt = _reference(rt, export_dir, run, o.reference, trust_code)
        ref_logits = _reference_logits(ref_rt, inputs, batch_size, progress)
        found, skipped = rt.discover(export_dir, run_dir=run.dir, names=runtimes, devices=devices,
                                     precisions=precisions, trust_code=trust_code)
        results = []
        for r in found:
            if _key(r) != _key(ref_rt):
                try:
                    results.append(evaluate_runtime(r, inputs, ref_logits, run, atol, rtol, batch_size,
                                                    _by_file(progress, r, export_dir)))
                finally:
                    r.close()
    results += [RuntimeResult(s.name, s.precision, s.device, skipped_reason=s.reason) for s in skipped]
    compared = [r for r in results if r.skipped_reason is None]
    if not compared:
        notes.append("no runtime could be compared with the reference")
    labels = inputs.labels
    ref_acc = None
    if labels is not None and (labels >= 0).all():
        ref_acc = 100.0 * float(np.mean(ref_logits.argmax(axis=1) == labels))
    from ..envinfo import environment

    return ParityReport(
        passed=bool(compared) and all(r.passed for r in compared), reference=ref_rt.label,
        images=len(inputs), results=results, source=inputs.source, labelled=labels is not None,
        reference_accuracy=ref_acc, skipped_images=inputs.skipped, atol=atol, rtol=rtol,
        run_dir=str(run.dir), export_dir=str(export_dir), notes=notes, environment=environment(),
    )


def _key(r) -> tuple:
    return (r.name, r.precision, r.device)


def _validate(export_dir, data, random, atol, rtol, max_images, batch_size) -> None:
    if not export_dir.is_dir():
        raise UsageError(f"export folder {export_dir} does not exist")
    if data is not None and random is not None:
        raise UsageError("give either --data or --random, not both")
    if random is not None and int(random) <= 0:
        raise UsageError(f"--random must be a positive number of inputs, got {random}")
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    if max_images is not None and max_images <= 0:
        raise UsageError(f"--max-images must be positive, got {max_images}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")


def gather_inputs(run, data, random, max_images) -> tuple[Inputs, list[str]]:
    """--data folder, --random N, or the run's val split (random inputs when it has none)."""
    from ..data.folders import labelled_folder

    pre, notes = run.preprocess, []
    if random is not None:
        return random_inputs(int(random), pre.crop), notes
    if data is not None:
        samples, root, notes = labelled_folder(data, run.classes, unknown="unlabelled")
        return load_images(samples, pre, root, f"data {root}", max_images), notes
    samples = run.samples("val")
    if not samples:
        n = max_images or FALLBACK_RANDOM
        notes.append("the run's val split is not on disk: random inputs used (pass --data DIR)")
        return random_inputs(n, pre.crop, note=", no val split on disk"), notes
    return load_images(samples, pre, None, "the run's val split", max_images), notes


def _reference(rt, export_dir: Path, run, reference: str, trust_code: bool):
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
                                     precisions=(precision,), trust_code=trust_code)
        match = [r for r in found if (r.precision, r.device) == (precision, device)]
        if not match:
            why = "; ".join(s.reason for s in skipped) or "no such artifact in the export folder"
            raise ParityError(f"reference {name}/{precision}/{device} is not available: {why}")
        ref = match[0]
    try:
        return ref.load()
    except RuntimeUnavailable as e:
        raise ParityError(f"reference {name}/{precision}/{device} is not available: {e}") from None


def _by_file(progress, runtime, export_dir: Path):
    """`progress` with the runtime's label led by its file, relative to the export folder:
    model.onnx, model.ort and Triton's model_repository/classifier/1/model.onnx all run on
    onnxruntime/fp32/cpu, and would be one line of progress otherwise."""
    if progress is None or runtime.artifact is None:
        return progress
    path = Path(runtime.artifact)
    name = path.relative_to(export_dir).as_posix() if path.is_relative_to(export_dir) else path.name
    return lambda label, done, total: progress(f"{name} ({label})", done, total)


def reference_logits(run_dir, inputs: Inputs, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """torch-eager fp32 logits of `inputs`, computed exactly as `parity()` computes its default
    reference (same runtime, batches and TF32 setting): export's int8 search gates on these, so
    that its verification, which runs `parity()`, measures the same numbers."""
    from .. import runtimes as rt

    with no_tf32():
        ref = rt.reference_runtime(run_dir, device=device).load()
        try:
            return _reference_logits(ref, inputs, batch_size, None)
        finally:
            ref.close()


def _reference_logits(ref, inputs: Inputs, batch_size: int, progress) -> np.ndarray:
    logits = run_all(ref, inputs, batch_size, progress)
    if logits.ndim != 2 or len(logits) != len(inputs):
        raise ParityError(f"reference {ref.label} returned shape {tuple(logits.shape)}")
    if not np.isfinite(logits).all():
        raise ParityError(f"reference {ref.label} produced non-finite logits; nothing to compare with")
    return logits.astype(np.float32, copy=False)
