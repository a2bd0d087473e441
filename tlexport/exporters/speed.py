"""Which verified file of an export runs fastest on each CPU runtime, timed at export on the
machine that exports, so that an int8 file slower than its fp32 twin is never shipped in silence.

The measurement is short and robust rather than precise: the files one runtime can run are
loaded side by side and called in interleaved rounds (a drift of the machine hits every file
alike), a few calls of each file per round after two untimed ones that let the previous file's
threads and data go, at batch 1, with the runtime's default threads (as an
app and `tlexport predict` run them); the median over every call of a file decides. The competing
CPU load over the measurement is recorded, and a result measured beside more than
`measure.NOISE_CORES` of other work is flagged noisy and says so. `tlexport bench` is the
measurement to quote; this one only picks a file and warns.

`compare` is what the pipeline calls; the timing itself is `time_files`, looked up when `compare`
runs, so a test can replace it and check the decisions without timing anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress as P
from ..formats import registry
from ..tables.artifacts import MODEL
from .job import Artifact

BATCH = 1  # an app classifying one picture at a time; bench measures other batch sizes
WARMUP_CALLS = 2  # per file, untimed: first calls allocate and pick kernels
# Untimed at the start of each file's turn in a round: the previous file's worker threads are
# still spinning (onnxruntime's pools spin after a call) and its data fills the caches. Timed
# right after a switch, mobilenet_v3_large's fp32 file ran 4.5-6.4 ms against 1.9-2.9 ms alone on a
# 2-core VM, and unevenly between the two files; after two settling calls, within a few % of alone.
SETTLE_CALLS = 2
MIN_ROUNDS, MAX_ROUNDS, CALLS_PER_ROUND = 3, 8, 5
BUDGET_S = 2.0  # per runtime: rounds stop once past it (never before MIN_ROUNDS)


def candidates(artifacts: list[Artifact]) -> dict[str, list[Artifact]]:
    """Per CPU runtime timed at export (`Runtime.timed_at_export`), the verified model files it can
    run, in export order. A file that is a
    byte-for-byte copy of one already listed (Triton's copy of model.onnx) is not timed twice."""
    from ..runtimes import runtime_class

    out: dict[str, list[Artifact]] = {}
    for a in artifacts:
        if a.role != MODEL or a.verified is not True or "cpu" not in a.devices:
            continue
        for name in registry.get(a.format).runtimes_on("cpu"):
            cls = runtime_class(name)
            if not cls.timed_at_export or cls.unavailable_reason("cpu", a.precision):
                continue
            listed = out.setdefault(name, [])
            if all(b.sha256 != a.sha256 for b in listed):
                listed.append(a)
    return out


@dataclass(frozen=True)
class Rounds:
    """How `time_files` times: `batch` images per call, `threads` per session (None: the
    runtime's default), at least `min_rounds` and at most `max_rounds` rounds, stopping once past
    `budget_s` seconds, `calls` timed calls of each file per round."""

    batch: int = BATCH
    threads: int | None = None
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = MAX_ROUNDS
    budget_s: float = BUDGET_S
    calls: int = CALLS_PER_ROUND


def time_files(runtime: str, files: list[tuple[Path, str]], crop: int, rounds: Rounds | None = None,
               **keywords) -> dict:
    """Interleaved timing of `files` ([(path, precision)]) on `runtime` (see the module docstring;
    benchmarks/int8_speed.py runs it longer, at other batch sizes and thread counts). `rounds`:
    how (`Rounds`), or instead its fields as keywords (`batch=8, min_rounds=2`).

    Returns:
        {"ms": [median ms per file], "times_ms": [every call's ms per file], "cpu_ms": [median
        process CPU ms per call per file], "rounds": n, "competing_load": cores or None}
    """
    from ..keywords import options_or_keywords

    return _time_files(runtime, files, crop, options_or_keywords(Rounds, rounds, keywords, "time_files", "rounds"))


def _time_files(runtime: str, files: list[tuple[Path, str]], crop: int, how: Rounds) -> dict:
    from ..measure import CpuLoad
    from ..runtimes import runtime_class

    batch, threads, min_rounds, max_rounds, calls = how.batch, how.threads, how.min_rounds, how.max_rounds, how.calls
    budget_s = how.budget_s
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((batch, 3, crop, crop), dtype=np.float32) for _ in range(2)]
    sessions = []
    try:
        for path, precision in files:
            sessions.append(runtime_class(runtime)(path, precision, "cpu", threads=threads).load())
        for s in sessions:
            for i in range(WARMUP_CALLS):
                s.run(inputs[i % 2])
        wall: list[list[float]] = [[] for _ in sessions]
        cpu: list[list[float]] = [[] for _ in sessions]
        load, started, rounds = CpuLoad().start(), time.perf_counter(), 0
        with P.step(f"{runtime}: {len(files)} files, round", max_rounds):
            while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - started < budget_s):
                for s, w, c in zip(sessions, wall, cpu):
                    for i in range(SETTLE_CALLS if len(sessions) > 1 else 0):
                        s.run(inputs[i % 2])
                    for i in range(calls):
                        t0, c0 = time.perf_counter(), time.process_time()
                        s.run(inputs[i % 2])
                        w.append((time.perf_counter() - t0) * 1e3)
                        c.append((time.process_time() - c0) * 1e3)
                rounds += 1
                P.advance()
        return {"ms": [float(np.median(w)) for w in wall], "times_ms": wall,
                "cpu_ms": [float(np.median(c)) for c in cpu], "rounds": rounds, "competing_load": load.stop()}
    finally:
        for s in sessions:
            s.close()


def compare(artifacts: list[Artifact], folder: Path, crop: int, paths: dict[str, Path] | None = None) -> dict:
    """Time the candidates of every runtime that has more than one; set each timed artifact's
    `speed[runtime]` and return the manifest's record. A file is `folder / file` unless `paths`
    names it elsewhere (the files an earlier export published, timed beside the staged ones).

    Returns:
        {"fastest": {runtime: file}, "batch", "method", "runtimes": {runtime: {"rounds",
        "competing_load", "noisy"}}, "notes": [one line per runtime where int8 is not faster]}
    """
    from ..measure import is_noisy

    record = {"fastest": {}, "batch": BATCH, "runtimes": {}, "notes": [],
              "method": f"interleaved rounds of {CALLS_PER_ROUND} calls per file (after {SETTLE_CALLS} untimed) at "
                        f"batch {BATCH}, median; "
                        f"{MIN_ROUNDS}-{MAX_ROUNDS} rounds within {BUDGET_S:g} s per runtime; default threads"}
    for runtime, arts in candidates(artifacts).items():
        if len(arts) == 1:  # nothing to choose between: not timed
            record["fastest"][runtime] = arts[0].file
            continue
        where = paths or {}
        measured = time_files(runtime, [(where.get(a.file, folder / a.file), a.precision) for a in arts], crop)
        noisy = is_noisy(measured.get("competing_load"))
        for a, ms in zip(arts, measured["ms"]):
            a.speed = {**(a.speed or {}), runtime: {"p50_ms": round(ms, 4), "batch": BATCH}}
        best = min(zip(arts, measured["ms"]), key=lambda t: t[1])[0]
        record["fastest"][runtime] = best.file
        load = measured.get("competing_load")
        record["runtimes"][runtime] = {"rounds": measured.get("rounds"), "noisy": noisy,
                                       "competing_load": None if load is None else round(load, 3)}
        note = slower_int8(runtime, arts, measured["ms"], noisy)
        if note:
            record["notes"].append(note)
    return record


def slower_int8(runtime: str, arts: list[Artifact], ms: list[float], noisy: bool) -> str | None:
    """One line when the fastest int8 file is not faster than the fastest fp32 one on `runtime`."""
    by = {}
    for a, t in zip(arts, ms):
        if a.precision not in by or t < by[a.precision][1]:
            by[a.precision] = (a, t)
    if "int8" not in by or "fp32" not in by or by["int8"][1] < by["fp32"][1]:
        return None
    (i8, t8), (f32, t32) = by["int8"], by["fp32"]
    fastest = min(by.values(), key=lambda v: v[1])[0]
    busy = "; the machine was busy, the timing is noisy" if noisy else ""
    return (f"int8 is not faster than fp32 on {runtime} here ({i8.file} {t8:.2f} ms, {f32.file} {t32:.2f} ms at "
            f"batch {BATCH}{busy}): the manifest names {fastest.file} as its fastest file")
