"""Latency and throughput of every exported artifact, measured the same way in one run.

Method (after timm's benchmark.py): each runtime is loaded once, warmed up (not timed), then
timed per iteration with `time.perf_counter` around `run()` + `synchronize()`, so queued GPU work
is inside the measurement. Inputs rotate among a few pre-generated random-normal batches (never
zeros: some kernels take shortcuts on zeros, and a single repeated batch flatters caches).
PyTorch eager fp32 is always measured on every device as the baseline for `speedup_vs_eager`.
A runtime that fails (to load, or mid-run) gets `error` set and the others go on.

Library code: returns a `BenchReport`; `tlexport.render` turns it into tables, Markdown and plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import RuntimeUnavailable, TlexportError, UsageError, first_line
from .spec.artifacts import DEVICES, FORMATS, MANIFEST, PRECISIONS, check_devices, check_precisions

DEFAULT_DURATION_S = 2.0  # time budget per (runtime, batch size) cell when neither iters nor duration
MIN_ITERS = 10  # even with a time budget, never fewer timed iterations than this
EAGER = "torch-eager"
RESULT_FIELDS = ("runtime", "precision", "device", "batch_size", "p50_ms", "p90_ms", "p99_ms",
                 "mean_ms", "std_ms", "min_ms", "throughput", "speedup_vs_eager", "iters", "error")


@dataclass
class BenchResult:
    """One (runtime, precision, device, batch size) cell. Times in milliseconds; throughput in
    images per second (batch size / mean latency). Statistics are None when `error` is set."""

    runtime: str
    precision: str
    device: str
    batch_size: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    throughput: float | None = None
    speedup_vs_eager: float | None = None
    iters: int = 0
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}/{self.device}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in RESULT_FIELDS}


@dataclass
class BenchReport:
    """All cells of one bench run plus the environment that produced them.

    `skipped` lists runtimes that cannot run here ({"runtime", "precision", "device", "reason"}).
    """

    environment: dict
    results: list[BenchResult]
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON schema documented in the README: environment, results, skipped."""
        return {
            "environment": self.environment,
            "results": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped),
        }

    def to_markdown(self) -> str:
        """A Markdown report: environment summary, one table row per cell, skipped runtimes."""
        from .render import bench_markdown

        return bench_markdown(self)


def summarize(times_s: list[float], batch_size: int) -> dict:
    """Latency statistics in ms and throughput from per-iteration wall times in seconds.

    Returns:
        dict with p50_ms, p90_ms, p99_ms, mean_ms, std_ms, min_ms, throughput.
    """
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return {
        "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": mean,
        "std_ms": float(ms.std()), "min_ms": float(ms.min()),
        "throughput": batch_size / (mean / 1e3) if mean > 0 else math.inf,
    }


def make_inputs(batch_size: int, image_size: int, n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """`n` distinct random-normal float32 NCHW batches (what normalised images look like)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32)
            for _ in range(max(1, n))]


def time_runtime(runtime, batch_size: int, warmup: int = 10, iters: int | None = None,
                 duration: float | None = None, inputs: int = 4, *, image_size: int | None = None,
                 seed: int = 0) -> BenchResult:
    """Time one loaded runtime at one batch size.

    Args:
        runtime: a loaded `tlexport.runtimes.Runtime` (anything with name/precision/device,
            run(batch) -> logits and synchronize()).
        batch_size: images per call.
        warmup: untimed calls first (lazy initialisation, autotuning, caches).
        iters: exact number of timed calls; or
        duration: time budget in seconds (at least MIN_ITERS calls). Neither: DEFAULT_DURATION_S.
        inputs: how many different pre-generated batches to rotate through.
        image_size: input side; default from the runtime's metadata (preprocess crop).
    Returns:
        BenchResult without speedup_vs_eager (bench() fills it). A failing call sets `error`
        and `iters` counts the timed calls that completed before it.
    """
    result = BenchResult(runtime.name, runtime.precision, runtime.device, batch_size)
    size = image_size or _image_size(runtime)
    batches = make_inputs(batch_size, size, inputs, seed)
    if iters is None and duration is None:
        duration = DEFAULT_DURATION_S
    times: list[float] = []
    try:
        for i in range(warmup):
            _check_output(runtime.run(batches[i % len(batches)]), batch_size)
        runtime.synchronize()
        clock = time.perf_counter
        deadline = clock() + duration if iters is None else math.inf
        i = 0
        while _keep_going(len(times), iters, deadline, clock):
            x = batches[i % len(batches)]
            t0 = clock()
            out = runtime.run(x)
            runtime.synchronize()
            times.append(clock() - t0)
            if i == 0:
                _check_output(out, batch_size)  # once, outside the timed region
            i += 1
    except Exception as e:  # any runtime failure is data for the report, not a crash
        result.error = first_line(e, 300, with_type=True)
        result.iters = len(times)
        return result
    result.iters = len(times)
    for key, value in summarize(times, batch_size).items():
        setattr(result, key, value)
    return result


def _keep_going(done: int, iters: int | None, deadline: float, clock) -> bool:
    if iters is not None:
        return done < iters
    return done < MIN_ITERS or clock() < deadline


def _check_output(out, batch_size: int) -> None:
    """A runtime that returns the wrong number of rows is not measuring what we think."""
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != batch_size:
        raise TlexportError(f"expected logits of shape [{batch_size}, K], got {shape}")


def _image_size(runtime) -> int:
    meta = getattr(runtime, "metadata", None) or {}
    try:
        return int(meta["preprocess"]["crop"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{runtime.name}: input size unknown (no preprocess in its metadata)") from None


def validate_options(batch_sizes, devices, precisions, warmup, iters, duration, threads) -> None:
    """Reject impossible options before anything heavy is loaded.

    Raises:
        UsageError: bad numbers, unknown device/precision, both iters and duration.
        RuntimeUnavailable: a CUDA device asked for on a machine without one.
    """
    if not batch_sizes:
        raise UsageError("no batch size given")
    for b in batch_sizes:
        if int(b) <= 0:
            raise UsageError(f"batch size must be a positive integer, got {b}")
    check_devices(devices)
    check_precisions(precisions)
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    if iters is not None and duration is not None:
        raise UsageError("give either --iters or --duration, not both")
    if iters is not None and iters <= 0:
        raise UsageError(f"--iters must be a positive integer, got {iters}")
    if duration is not None and not duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {duration}")
    if threads is not None and threads <= 0:
        raise UsageError(f"--threads must be a positive integer, got {threads}")
    if "cuda" in devices:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeUnavailable("--device cuda needs a CUDA GPU, and torch sees none on this machine")


ARTIFACT_GLOBS = (*(f"*{f.suffix}" for f in FORMATS.values()), MANIFEST)


def check_export_dir(export_dir: Path) -> Path:
    """The export folder must exist and hold at least one artifact (or its manifest)."""
    export_dir = Path(export_dir).expanduser()
    if not export_dir.is_dir():
        raise TlexportError(f"export folder {export_dir} does not exist (run `tlexport export RUN_DIR` first)")
    if not any(any(export_dir.glob(g)) for g in ARTIFACT_GLOBS):
        raise TlexportError(f"{export_dir} holds no exported model ({', '.join(ARTIFACT_GLOBS)}); "
                            "run `tlexport export RUN_DIR --out` to that folder first")
    return export_dir


def select_runtimes(export_dir, run_dir, names, devices, precisions, threads, trust_code=False):
    """Ask the runtime layer what can run, always keeping torch-eager fp32 as the baseline.

    Returns:
        (runtimes ordered eager-first per device, skipped as dicts)
    """
    from . import runtimes as rt

    if names:
        unknown = [n for n in names if n not in rt.RUNTIME_NAMES]
        if unknown:
            raise UsageError(f"unknown runtime {', '.join(unknown)}; choose from {', '.join(rt.RUNTIME_NAMES)}")
    ask = sorted(set(names) | {EAGER}) if names else None
    found, skipped = rt.discover(export_dir, run_dir=run_dir, names=ask, devices=tuple(devices),
                                 precisions=None, threads=threads, trust_code=trust_code)

    def wanted(name, precision):
        if name == EAGER and precision == "fp32":
            return True  # the baseline for speedup_vs_eager, always measured
        return (not names or name in names) and (not precisions or precision in precisions)

    chosen = [r for r in found if wanted(r.name, r.precision)]
    # Eager first on each device (the baseline), then runtimes in discovery order, fp32 first.
    order = {name: i for i, name in reversed(list(enumerate(r.name for r in chosen)))}
    chosen.sort(key=lambda r: (DEVICES.index(r.device) if r.device in DEVICES else 9, r.name != EAGER,
                               order[r.name], PRECISIONS.index(r.precision) if r.precision in PRECISIONS else 9))
    skipped_out = [{"runtime": s.name, "precision": s.precision, "device": s.device, "reason": s.reason}
                   for s in skipped if wanted(s.name, s.precision)]
    return chosen, skipped_out


def bench(export_dir, *, runtimes=None, precisions=None, devices=("cpu",), batch_sizes=(1,),
          warmup: int = 10, iters: int | None = None, duration: float | None = None,
          threads: int | None = None, run_dir=None, inputs: int = 4, trust_code: bool = False,
          progress: Callable[[str, int, int], None] | None = None) -> BenchReport:
    """Benchmark every runtime x precision x device x batch size the export folder allows.

    Args:
        export_dir: folder written by `tlexport export`.
        runtimes: runtime names to measure (None: all available); torch-eager fp32 is added.
        precisions: fp32/fp16/int8 filter (None: all).
        devices: "cpu" and/or "cuda".
        batch_sizes: positive ints.
        warmup, iters, duration, inputs: see `time_runtime`.
        threads: intra-op threads for every runtime and torch (None: library defaults).
        run_dir: run directory for torch-eager (default: the one the export records).
        trust_code: also load TorchScript / .pt2 files of the folder (loading runs their code).
        progress: called as progress(label, done, total) after each cell.
    Returns:
        BenchReport with one BenchResult per cell (failed cells carry `error`).
    Raises:
        UsageError, RuntimeUnavailable, TlexportError: bad options or nothing to measure.
    """
    devices = tuple(devices)
    batch_sizes = tuple(int(b) for b in batch_sizes)
    validate_options(batch_sizes, devices, precisions, warmup, iters, duration, threads)
    export_dir = check_export_dir(export_dir)
    import torch

    chosen, skipped = select_runtimes(export_dir, run_dir, list(runtimes or []), devices,
                                      list(precisions or []), threads, trust_code)
    if not chosen:
        reasons = "; ".join(f"{s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}" for s in skipped)
        raise RuntimeUnavailable(f"nothing in {export_dir} can be benchmarked here" + (f" ({reasons})" if reasons else ""))
    size = input_size(chosen)
    previous = torch.get_num_threads()
    try:  # --threads is for this measurement, not for whatever the caller runs next
        if threads:
            torch.set_num_threads(threads)
        results = _measure_all(chosen, batch_sizes, warmup, iters, duration, inputs, threads, size, progress)
    finally:
        torch.set_num_threads(previous)
    fill_speedups(results)
    from .envinfo import environment

    env = environment(threads)
    env["bench"] = {"export_dir": str(export_dir), "batch_sizes": list(batch_sizes), "warmup": warmup,
                    "iters": iters, "duration_s": duration if iters is not None or duration else DEFAULT_DURATION_S,
                    "min_iters": MIN_ITERS, "inputs": inputs,
                    "timer": "time.perf_counter around run() + synchronize(), numpy in/out"}
    return BenchReport(env, results, skipped)


def input_size(chosen) -> int:
    """The model's input side, from the first artifact's embedded preprocessing or the run's."""
    for r in chosen:
        try:
            meta = r.metadata
            if meta and meta.get("preprocess"):
                return int(meta["preprocess"]["crop"])
            if getattr(r, "run_dir", None) is not None:
                from .models import load_run

                return int(load_run(r.run_dir).preprocess.crop)
        except Exception:  # an unreadable artifact: that runtime will report its own error
            continue
    raise TlexportError("cannot tell the model's input size (no metadata in the artifacts, no run.json)")


def _measure_all(chosen, batch_sizes, warmup, iters, duration, inputs, threads, size, progress):
    """Load each runtime once, time it at every batch size, release it before the next."""
    results: list[BenchResult] = []
    total, done = len(chosen) * len(batch_sizes), 0
    for index, runtime in enumerate(chosen):
        load_error = None
        try:
            if threads:
                runtime.set_threads(threads)
            runtime.load()
        except Exception as e:  # RuntimeUnavailable or a broken artifact: report, go on
            load_error = first_line(e, 300, with_type=True)
        for b in batch_sizes:
            if load_error:
                res = BenchResult(runtime.name, runtime.precision, runtime.device, b, error=load_error)
            else:
                res = time_runtime(runtime, b, warmup, iters, duration, inputs, image_size=size)
            results.append(res)
            done += 1
            if progress:
                progress(res.label + f" b{b}", done, total)
        close = getattr(runtime, "close", None)
        if close is not None:
            close()  # release the session before loading the next one
        chosen[index] = None
    return results


def fill_speedups(results: list[BenchResult]) -> None:
    """speedup_vs_eager = eager fp32 p50 / this p50 for the same device and batch size."""
    base = {(r.device, r.batch_size): r.p50_ms for r in results
            if r.runtime == EAGER and r.precision == "fp32" and r.p50_ms}
    for r in results:
        ref = base.get((r.device, r.batch_size))
        r.speedup_vs_eager = (ref / r.p50_ms) if (ref and r.p50_ms) else None
