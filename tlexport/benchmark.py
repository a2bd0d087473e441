"""Latency and throughput of every exported artifact, measured the same way in one run.

Method (after timm's benchmark.py): each runtime is loaded once (load time recorded), its first
call timed on its own (cold start), then warmed up until latency is stable (or a fixed number of
calls), then timed per iteration with `time.perf_counter` around `run()` + `synchronize()`, so
queued GPU work is inside the measurement. Peak resident memory and competing CPU load are
recorded per cell (`tlexport.measure`); a cell measured beside other busy processes is flagged
`noisy`. `concurrency` > 1 runs that many sessions of the runtime in parallel threads (as
trtexec --infStreams / onnxruntime_perf_test -c) for throughput and latency under load. Inputs rotate among a few pre-generated random-normal batches (never
zeros: some kernels take shortcuts on zeros, and a single repeated batch flatters caches).
PyTorch eager fp32 is always measured on every device as the baseline for `speedup_vs_eager`.
A runtime that times its own calls where they run (the browser runtime, inside its page with
`performance.now()`) says so with `timer` and leaves each call's milliseconds in `reported_ms`
after `run()`: its cells are those times (`timer` names the clock, `wall_p50_ms` keeps the round
trip as Python's clock saw it).
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

from .errors import MissingInput, NotAnExport, RuntimeUnavailable, TlexportError, UsageError, first_line, require_gpu
from .tables.artifacts import DEVICES, PRECISIONS, check_devices, check_precisions

DEFAULT_DURATION_S = 2.0  # time budget per (runtime, batch size) cell when neither iters nor duration
MIN_ITERS = 10  # even with a time budget, never fewer timed iterations than this
EAGER = "torch-eager"
RESULT_FIELDS = ("runtime", "precision", "device", "batch_size", "p50_ms", "p90_ms", "p99_ms",
                 "mean_ms", "std_ms", "min_ms", "throughput", "speedup_vs_eager", "iters", "error",
                 # added after the first schema; readers of the old fields are unaffected
                 "artifact", "size_bytes", "load_s", "first_call_ms", "warmup_calls", "warmup_stable",
                 "peak_rss_mb", "concurrency", "competing_load", "noisy", "timer", "wall_p50_ms")
# Warm-up "auto": windows of calls until the median of one window is within STABLE_REL of the
# previous one, at least 2 windows, at most WARMUP_MAX_CALLS calls or WARMUP_MAX_S seconds.
WARMUP_WINDOW, STABLE_REL, WARMUP_MAX_CALLS, WARMUP_MAX_S = 5, 0.05, 200, 10.0


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
    artifact: str | None = None  # path in the export folder (None: torch-eager from the run's weights)
    size_bytes: int | None = None  # on disk, with companion files (OpenVINO .bin)
    load_s: float | None = None  # session/model load of the runtime
    first_call_ms: float | None = None  # the first call at this batch size (cold start)
    warmup_calls: int | None = None
    warmup_stable: bool | None = None  # False: warm-up hit its bound before latency settled
    peak_rss_mb: float | None = None  # peak resident memory above the RSS before loading
    concurrency: int = 1  # parallel sessions (throughput = all of them together)
    competing_load: float | None = None  # cores other processes used while this cell ran
    noisy: bool = False  # competing_load > measure.NOISE_CORES: not a result to quote
    timer: str | None = None  # the runtime's own clock, when it timed its calls (None: perf_counter here)
    wall_p50_ms: float | None = None  # with a runtime's own timer: p50 of the round trip seen from here

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

    @property
    def noisy(self) -> bool:
        return any(r.noisy for r in self.results) or bool(self.environment.get("load_check", {}).get("noisy"))

    def to_dict(self) -> dict:
        """The JSON schema documented in the README: environment, results, skipped (+ noisy)."""
        return {
            "environment": self.environment,
            "results": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped),
            "noisy": self.noisy,
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


def call_seconds(runtime, wall_s: float) -> float:
    """One call's time: the runtime's own measurement when it reports one (`reported_ms`), else
    the wall time around run() + synchronize()."""
    own = getattr(runtime, "reported_ms", None) if getattr(runtime, "timer", None) else None
    return own / 1e3 if own is not None else wall_s


def time_runtime(runtime, batch_size: int, warmup: int | str = 10, iters: int | None = None,
                 duration: float | None = None, inputs: int = 4, *, image_size: int | None = None,
                 seed: int = 0) -> BenchResult:
    """Time one loaded runtime at one batch size.

    Args:
        runtime: a loaded `tlexport.runtimes.Runtime` (anything with name/precision/device,
            run(batch) -> logits and synchronize()).
        batch_size: images per call.
        warmup: untimed calls first (lazy initialisation, autotuning, caches): a count, or "auto"
            (until latency is stable; see WARMUP_WINDOW). The first of all calls is timed alone
            as `first_call_ms` (when warmup is 0 it is also the first timed call).
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
    walls: list[float] = []
    clock = time.perf_counter
    try:
        result.warmup_calls, result.warmup_stable, first = _warm_up(runtime, batches, batch_size, warmup)
        deadline = clock() + duration if iters is None else math.inf
        i = 0
        while _keep_going(len(times), iters, deadline, clock):
            x = batches[i % len(batches)]
            t0 = clock()
            out = runtime.run(x)
            runtime.synchronize()
            walls.append(clock() - t0)
            times.append(call_seconds(runtime, walls[-1]))
            if i == 0:
                _check_output(out, batch_size)  # once, outside the timed region
            i += 1
        result.first_call_ms = (first if first is not None else times[0]) * 1e3
    except Exception as e:  # any runtime failure is data for the report, not a crash
        result.error = first_line(e, 300, with_type=True)
        result.iters = len(times)
        return result
    result.iters = len(times)
    for key, value in summarize(times, batch_size).items():
        setattr(result, key, value)
    result.timer = getattr(runtime, "timer", None)
    if result.timer:
        result.wall_p50_ms = float(np.percentile(walls, 50)) * 1e3
    return result


def _warm_up(runtime, batches, batch_size: int, warmup) -> tuple[int, bool | None, float | None]:
    """Untimed warm-up calls. Returns (calls made, stable or None for a fixed count, seconds of
    the first call or None when no call was made)."""
    clock = time.perf_counter
    times: list[float] = []
    auto = warmup == "auto"
    limit = WARMUP_MAX_CALLS if auto else int(warmup)
    started = clock()
    stable = False
    while len(times) < limit:
        t0 = clock()
        out = runtime.run(batches[len(times) % len(batches)])
        runtime.synchronize()
        times.append(call_seconds(runtime, clock() - t0))
        if len(times) == 1:
            _check_output(out, batch_size)
        if auto and (settled(times) or clock() - started > WARMUP_MAX_S):
            stable = settled(times)
            break
    return len(times), (stable if auto else None), (times[0] if times else None)


def settled(times: list[float], window: int = WARMUP_WINDOW, rel: float = STABLE_REL) -> bool:
    """The median of the last `window` calls is within `rel` of the window before it."""
    if len(times) < 2 * window:
        return False
    last = float(np.median(times[-window:]))
    before = float(np.median(times[-2 * window : -window]))
    return abs(last - before) <= rel * before


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
        NoGPU: a CUDA device asked for on a machine without one.
    """
    if not batch_sizes:
        raise UsageError("no batch size given")
    for b in batch_sizes:
        if int(b) <= 0:
            raise UsageError(f"batch size must be a positive integer, got {b}")
    check_devices(devices)
    check_precisions(precisions)
    if warmup != "auto" and (not isinstance(warmup, int) or warmup < 0):
        raise UsageError(f"--warmup must be 'auto' or a count >= 0, got {warmup}")
    if iters is not None and duration is not None:
        raise UsageError("give either --iters or --duration, not both")
    if iters is not None and iters <= 0:
        raise UsageError(f"--iters must be a positive integer, got {iters}")
    if duration is not None and not duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {duration}")
    if threads is not None and threads <= 0:
        raise UsageError(f"--threads must be a positive integer, got {threads}")
    require_gpu(devices)


def check_export_dir(export_dir: Path) -> Path:
    """The export folder must exist and hold at least one artifact of a registered format (or its
    manifest): `tables.artifacts.holds_export`."""
    from .tables.artifacts import export_globs, holds_export

    export_dir = Path(export_dir).expanduser()
    if not export_dir.is_dir():
        raise MissingInput(f"export folder {export_dir} does not exist (run `tlexport export RUN_DIR` first)")
    if not holds_export(export_dir):
        raise NotAnExport(f"{export_dir} is not a tlexport export: it holds no exported model "
                          f"({', '.join(export_globs())}); run `tlexport export RUN_DIR --out {export_dir}` first")
    return export_dir


def select_runtimes(export_dir, run_dir, names, devices, precisions, threads, trust_code=False):
    """Ask the runtime layer what can run, always keeping torch-eager fp32 as the baseline.

    Returns:
        (runtimes ordered eager-first per device, skipped as dicts)
    """
    from . import runtimes as rt

    names = list(rt.check_names(names)) if names else []
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


@dataclass(frozen=True)
class BenchOptions:
    """What `bench()` measures, and how (`tlexport bench`'s options).

    Args:
        runtimes: runtime names to measure (None: all available); torch-eager fp32 is added.
        precisions: fp32/fp16/int8 filter (None: all).
        devices: "cpu" and/or "cuda".
        batch_sizes: positive ints.
        warmup, iters, duration, inputs: see `time_runtime`.
        threads: intra-op threads for every runtime and torch (None: library defaults); with
            concurrency N each session gets threads // N (at least 1).
        run_dir: run directory for torch-eager (default: the one the export records).
        trust_code: also load TorchScript / .pt2 files of the folder (loading runs their code).
        concurrency: numbers of parallel sessions to measure (1: one session, plain latency).
        strict: refuse to start when other processes already load the CPU.
    """

    runtimes: tuple | list | None = None
    precisions: tuple | list | None = None
    devices: tuple | list = ("cpu",)
    batch_sizes: tuple | list = (1,)
    warmup: int | str = "auto"
    iters: int | None = None
    duration: float | None = None
    threads: int | None = None
    run_dir: Path | str | None = None
    inputs: int = 4
    trust_code: bool = False
    concurrency: tuple | list = (1,)
    strict: bool = False


def bench(export_dir, options: BenchOptions | None = None, *,
          progress: Callable[[str, int, int], None] | None = None, **keywords) -> BenchReport:
    """Benchmark every runtime x precision x device x batch size (x concurrency) the export
    folder allows.

    Args:
        export_dir: folder written by `tlexport export`.
        options: a `BenchOptions`, or instead its fields as keywords (`runtimes=`,
            `batch_sizes=`, `duration=`, ...: `bench(folder, batch_sizes=(1, 8))`).
        progress: called as progress(label, done, total) after each cell.
    Returns:
        BenchReport with one BenchResult per cell (failed cells carry `error`, cells measured
        beside competing load carry `noisy`).
    Raises:
        UsageError, RuntimeUnavailable, TlexportError: bad options, nothing to measure, or (strict)
        a busy machine. TypeError: both `options` and keywords, or an unknown keyword.
    """
    from .keywords import options_or_keywords

    return _bench(export_dir, options_or_keywords(BenchOptions, options, keywords, "bench"), progress)


def _bench(export_dir, o: BenchOptions, progress) -> BenchReport:
    from . import measure

    devices, precisions, threads, trust_code = tuple(o.devices), o.precisions, o.threads, o.trust_code
    batch_sizes = tuple(int(b) for b in o.batch_sizes)
    concurrency = tuple(int(c) for c in o.concurrency)
    validate_options(batch_sizes, devices, precisions, o.warmup, o.iters, o.duration, threads)
    if not concurrency or min(concurrency) < 1:
        raise UsageError(f"--concurrency must be positive integers, got {', '.join(map(str, concurrency))}")
    export_dir = check_export_dir(export_dir)
    before = measure.competing_load()
    if o.strict and measure.is_noisy(before):
        raise TlexportError(f"other processes use {before:.2f} CPU cores (more than {measure.NOISE_CORES}); "
                            "timings would be noise (--strict). Run on an idle machine")
    import torch

    chosen, skipped = select_runtimes(export_dir, o.run_dir, list(o.runtimes or []), devices,
                                      list(precisions or []), threads, trust_code)
    if not chosen:
        reasons = "; ".join(f"{s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}" for s in skipped)
        raise RuntimeUnavailable(f"nothing in {export_dir} can be benchmarked here" + (f" ({reasons})" if reasons else ""))
    size = input_size(chosen)
    previous = torch.get_num_threads()
    plan = Plan(batch_sizes, o.warmup, o.iters, o.duration, o.inputs, threads, size, concurrency)
    try:  # --threads is for this measurement, not for whatever the caller runs next
        if threads:
            torch.set_num_threads(threads)
        results = _measure_all(chosen, plan, progress)
    finally:
        torch.set_num_threads(previous)
    fill_speedups(results)
    for r in results:
        r.artifact = _relative(r.artifact, export_dir)
    return BenchReport(_environment(export_dir, plan, before), results, skipped)


def _relative(artifact: str | None, export_dir: Path) -> str | None:
    """A measured file as named in the export folder: model.onnx, model.ort and Triton's
    model_repository/classifier/1/model.onnx all run on onnxruntime fp32, and only the path tells
    the last from the first."""
    if artifact is None:
        return None
    path = Path(artifact)
    try:
        return path.relative_to(export_dir).as_posix()
    except ValueError:
        return path.name


@dataclass
class Plan:
    """How every cell is measured (see `bench`)."""

    batch_sizes: tuple
    warmup: int | str
    iters: int | None
    duration: float | None
    inputs: int
    threads: int | None
    size: int
    concurrency: tuple = (1,)


def _environment(export_dir, plan: Plan, before) -> dict:
    from . import measure
    from .envinfo import environment

    env = environment(plan.threads)
    env["bench"] = {"export_dir": str(export_dir), "batch_sizes": list(plan.batch_sizes), "warmup": plan.warmup,
                    "iters": plan.iters,
                    "duration_s": plan.duration if plan.iters is not None or plan.duration else DEFAULT_DURATION_S,
                    "min_iters": MIN_ITERS, "inputs": plan.inputs, "concurrency": list(plan.concurrency),
                    "warmup_rule": f"auto: median of {WARMUP_WINDOW} calls within {STABLE_REL:.0%} of the "
                                   f"previous {WARMUP_WINDOW}, at most {WARMUP_MAX_CALLS} calls / {WARMUP_MAX_S:g} s",
                    "memory": measure.PeakRss.method,
                    "timer": "time.perf_counter around run() + synchronize(), numpy in/out (a cell with its own "
                             "`timer` was timed by the runtime where it ran)"}
    env["load_check"] = {"before_cores": None if before is None else round(before, 3),
                         "threshold_cores": measure.NOISE_CORES, "noisy": measure.is_noisy(before),
                         "how": "CPU time of all processes (/proc/stat) minus this process's, per second"}
    return env


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


def _measure_all(chosen, plan: Plan, progress):
    """Load each runtime once, time it at every batch size (then under concurrency), release it
    before the next."""
    results: list[BenchResult] = []
    total = len(chosen) * len(plan.batch_sizes) * len(plan.concurrency)

    def tick(res):
        results.append(res)
        if progress:
            progress(res.label + f" b{res.batch_size}" + (f" x{res.concurrency}" if res.concurrency > 1 else ""),
                     len(results), total)

    for index, runtime in enumerate(chosen):
        _measure_runtime(runtime, plan, tick)
        for n in plan.concurrency:
            if n > 1:
                for b in plan.batch_sizes:
                    tick(time_concurrent(runtime, b, n, plan))
        chosen[index] = None
    return results


def _measure_runtime(runtime, plan: Plan, tick) -> None:
    """One runtime, one session: load time, then every batch size; memory from before loading."""
    from . import measure

    rss = measure.PeakRss().start()
    load_error, t0 = None, time.perf_counter()
    try:
        if plan.threads:
            runtime.set_threads(plan.threads)
        runtime.load()
    except Exception as e:  # RuntimeUnavailable or a broken artifact: report, go on
        load_error = first_line(e, 300, with_type=True)
    load_s = time.perf_counter() - t0
    for b in plan.batch_sizes:
        if load_error:
            res = BenchResult(runtime.name, runtime.precision, runtime.device, b, error=load_error)
        else:
            load = measure.CpuLoad().start()
            res = time_runtime(runtime, b, plan.warmup, plan.iters, plan.duration, plan.inputs, image_size=plan.size)
            res.competing_load = load.stop()
            res.noisy = measure.is_noisy(res.competing_load)
            res.peak_rss_mb, res.load_s = rss.peak_mb(), round(load_s, 4)
        res.artifact, res.size_bytes = _on_disk(runtime)
        tick(res)
    close = getattr(runtime, "close", None)
    if close is not None:
        close()  # release the session before loading the next one


def _on_disk(runtime) -> tuple[str | None, int | None]:
    """(file path, bytes with companion files) of what the runtime loads; torch-eager: its weights."""
    from .formats.files import companions_of
    from .tables.artifacts import artifact_size

    path = getattr(runtime, "artifact", None)
    if path is None:
        run_dir = getattr(runtime, "run_dir", None)
        weights = Path(run_dir) / "best.safetensors" if run_dir else None
        return None, (weights.stat().st_size if weights and weights.is_file() else None)
    path = Path(path)
    files = [path, *(path.parent / c for c in companions_of(path.name))]
    return str(path), (sum(artifact_size(f) for f in files if f.exists()) or None)


def _clone(runtime, threads: int | None):
    """A fresh, unloaded session of the same artifact (a runtime's `clone(threads)` if it has one)."""
    clone = getattr(runtime, "clone", None)
    if clone is not None:
        return clone(threads)
    return type(runtime)(runtime.artifact, runtime.precision, runtime.device, run_dir=runtime.run_dir,
                         threads=threads)


def time_concurrent(runtime, batch_size: int, n: int, plan: Plan) -> BenchResult:
    """`n` sessions of the runtime, each in its own thread, calling run() at once for the time
    budget (or `iters` calls each). Each session gets threads // n intra-op threads (of --threads,
    else of the usable cores) so they do not oversubscribe the CPU. Latency percentiles are over
    every call; throughput is all images over the wall time.
    """
    import threading

    from . import measure
    from .envinfo import usable_cores

    res = BenchResult(runtime.name, runtime.precision, runtime.device, batch_size, concurrency=n)
    res.artifact, res.size_bytes = _on_disk(runtime)
    per = max(1, (plan.threads or usable_cores() or 1) // n)
    rss = measure.PeakRss().start()
    sessions = []
    try:
        t0 = time.perf_counter()
        sessions = [_clone(runtime, per).load() for _ in range(n)]
        res.load_s = round(time.perf_counter() - t0, 4)
        batches = make_inputs(batch_size, plan.size, plan.inputs)
        for s in sessions:  # warm each session up before any is timed
            res.warmup_calls, res.warmup_stable, first = _warm_up(s, batches, batch_size,
                                                                   plan.warmup if plan.warmup != "auto" else 2 * WARMUP_WINDOW)
            res.first_call_ms = first * 1e3 if first is not None else None
        load = measure.CpuLoad().start()
        times, wall = _run_parallel(sessions, batches, plan, threading)
        res.competing_load = load.stop()
        res.noisy = measure.is_noisy(res.competing_load)
        res.peak_rss_mb = rss.peak_mb()
    except Exception as e:
        res.error = first_line(e, 300, with_type=True)
        return res
    finally:
        for s in sessions:
            getattr(s, "close", lambda: None)()
    res.iters = len(times)
    for key, value in summarize(times, batch_size).items():
        setattr(res, key, value)
    res.timer = getattr(sessions[0], "timer", None) if sessions else None
    res.throughput = len(times) * batch_size / wall if wall > 0 else math.inf
    return res


def _run_parallel(sessions, batches, plan: Plan, threading) -> tuple[list[float], float]:
    """Start every session's timed loop together; (all call times, wall seconds)."""
    clock = time.perf_counter
    go = threading.Event()
    per_session: list[list[float]] = [[] for _ in sessions]
    errors: list[BaseException] = []
    budget = plan.duration if plan.iters is None and plan.duration else DEFAULT_DURATION_S

    def worker(s, times):
        try:
            go.wait()
            deadline = clock() + budget
            i = 0
            while (len(times) < plan.iters) if plan.iters is not None else (clock() < deadline or len(times) < MIN_ITERS):
                t0 = clock()
                s.run(batches[i % len(batches)])
                s.synchronize()
                times.append(call_seconds(s, clock() - t0))
                i += 1
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s, t), daemon=True) for s, t in zip(sessions, per_session)]
    for t in threads:
        t.start()
    t0 = clock()
    go.set()
    for t in threads:
        t.join()
    wall = clock() - t0
    if errors:
        raise errors[0]
    return [x for times in per_session for x in times], wall


def fill_speedups(results: list[BenchResult]) -> None:
    """speedup_vs_eager = eager fp32 p50 / this p50 for the same device and batch size, for
    single-session cells (under concurrency, compare throughput instead)."""
    single = [r for r in results if getattr(r, "concurrency", 1) == 1]
    base = {(r.device, r.batch_size): r.p50_ms for r in single
            if r.runtime == EAGER and r.precision == "fp32" and r.p50_ms}
    for r in results:
        ref = base.get((r.device, r.batch_size)) if r in single else None
        r.speedup_vs_eager = (ref / r.p50_ms) if (ref and r.p50_ms) else None
