"""What long library work is doing right now, for whoever shows it (the CLI's progress line, an
API caller's `progress=` hook).

Export runs for minutes inside converters that say nothing; a line that does not change looks
hung. So every stage names itself (`stage("ExecuTorch int8")`), the steps inside it say what they
wait for (`with step("lowering to XNNPACK"):`), and countable work counts (`advance`, `counted`:
"calibrating 37/256 images"). Steps nest: a search trial holds its calibration and its
held-out check, and the line reads "ONNX int8 · trial 2/≤5 · calibrating 40/128 images".

The listener is a context variable set by `listening(callback)`: library code reports without
being handed a callback through every layer, and without a listener every call is a no-op. The
callback gets a `Status`: a str (the whole line, so a plain `print` hook works) that also carries
its parts for a display that wants them (elapsed time per stage, a bar for counts).
This module is on the bottom floor: it imports nothing of tlexport.
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator

SEP = " · "


class Status(str):
    """One progress line, e.g. "ONNX int8 · trial 1/≤5 · calibrating 16/128 images".

    Attributes:
        stage: what is being made ("ExecuTorch int8"), the part a display times.
        steps: the nested steps' texts, outermost first, counts included.
        done, total, unit: the innermost counted step's count (None when it counts nothing).
        since: time.monotonic() when the stage began.
    """

    stage: str
    steps: tuple
    done: int | None
    total: int | None
    unit: str
    since: float

    def __new__(cls, stage: str, steps: tuple = (), done=None, total=None, unit: str = "", since: float = 0.0):
        obj = super().__new__(cls, SEP.join(filter(None, (stage, *steps))))
        obj.stage, obj.steps, obj.done, obj.total, obj.unit, obj.since = stage, steps, done, total, unit, since
        return obj


class _Step:
    def __init__(self, what: str, total: int | None, unit: str, transient: bool = False):
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self.transient = transient  # a `hook`'s count: the next step at its depth replaces it

    def text(self) -> str:
        if self.total is None and not self.done:
            return self.what
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        return f"{self.what} {count}" + (f" {self.unit}" if self.unit else "")


class _Reporter:
    def __init__(self, callback: Callable[[str], None]):
        self.callback = callback
        self.label, self.since, self.steps = "", time.monotonic(), []

    def emit(self) -> None:
        counted = next((s for s in reversed(self.steps) if s.total is not None or s.done), None)
        self.callback(Status(self.label, tuple(s.text() for s in self.steps),
                             counted and counted.done, counted and counted.total, counted.unit if counted else "",
                             self.since))


_current: ContextVar[_Reporter | None] = ContextVar("tlexport_progress", default=None)


@contextlib.contextmanager
def listening(callback: Callable[[str], None] | None):
    """Send this block's progress to `callback` (None: nowhere). Nested blocks restore the outer
    listener when they end."""
    token = _current.set(_Reporter(callback) if callback is not None else None)
    try:
        yield
    finally:
        _current.reset(token)


def stage(label: str) -> None:
    """A new stage: what is being made now ("LiteRT int8", "verifying against torch-eager")."""
    rep = _current.get()
    if rep is None:
        return
    rep.label, rep.since, rep.steps = str(label), time.monotonic(), []
    rep.emit()


@contextlib.contextmanager
def step(what: str, total: int | None = None, unit: str = ""):
    """A step inside the stage for the block: "lowering to XNNPACK" (nothing to count: the display
    shows its elapsed time), or with `total` "calibrating 0/256 images" counted by `advance`."""
    rep = _current.get()
    if rep is None:
        yield
        return
    while rep.steps and rep.steps[-1].transient:
        rep.steps.pop()
    rep.steps.append(_Step(what, total, unit))
    depth = len(rep.steps)
    rep.emit()
    try:
        yield
    finally:
        del rep.steps[depth - 1:]  # an inner step left open by an abandoned generator goes too
        rep.emit()


def advance(n: int = 1) -> None:
    """Count `n` more units of the innermost step."""
    rep = _current.get()
    if rep is None or not rep.steps:
        return
    rep.steps[-1].done += n
    rep.emit()


def counted(items: Iterable, what: str, total: int | None = None, unit: str = "",
            size: Callable[[object], int] | None = None) -> Iterator:
    """Yield `items` inside `step(what, total, unit)`, counting `size(item)` (default 1) after each."""
    with step(what, total, unit):
        for item in items:
            yield item
            advance(size(item) if size else 1)


def hook(unit: str = "") -> Callable[[str, int, int], None]:
    """A `progress(label, done, total)` callable for code that reports that way (parity, bench):
    each call shows "label done/total unit" as the innermost step of the current one."""
    rep = _current.get()
    if rep is None:
        return lambda label, done, total: None
    depth = len(rep.steps)

    def report(label, done, total):
        del rep.steps[depth:]
        counted_step = _Step(str(label), total, unit, transient=True)
        counted_step.done = done
        rep.steps.append(counted_step)
        rep.emit()

    return report


def reporting(fn):
    """Decorate a library function whose `progress=` keyword takes a callback: the function's
    stages, steps and counts (this module's calls, at any depth) go to that callback. True prints
    each stage once on stderr (a caller's log, not a redrawn status line); None/False: silent."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, progress=None, **kwargs):
        with listening(_callback(progress)):
            return fn(*args, progress=progress, **kwargs)

    return wrapper


def _callback(progress) -> Callable[[str], None] | None:
    """The `progress=` argument as a callback: True -> stages on stderr, False/None -> None."""
    if progress is True:
        import sys

        return stages_only(lambda stage: print(stage, file=sys.stderr, flush=True))
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise TypeError(f"progress must be None, a bool or a callable, not {type(progress).__name__}")
    return progress


def stages_only(callback: Callable[[str], None]) -> Callable[[str], None]:
    """A `progress=` callback that passes on each stage once ("ONNX int8"), not every step and
    count: for a log of lines rather than a status line redrawn in place."""
    last = [None]

    def forward(status):
        stage = getattr(status, "stage", status)
        if stage != last[0]:
            last[0] = stage
            callback(stage)

    return forward
