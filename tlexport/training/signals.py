"""Stopping a run on SIGTERM as on Ctrl-C, without a race.

While a run trains (and only then: the handlers are put back before the call returns, long before
the interpreter shuts down) SIGINT and SIGTERM raise `Stopped`, a KeyboardInterrupt, at the point
the main thread has reached, so `finally` blocks and the folder lock unwind as for Ctrl-C. Inside
`deferred()` (the files of a finished epoch being written) the handler only records the signal;
it is raised once the block is done, so the files a checkpoint consists of are complete and agree.
The training call turns Stopped into TrainingInterrupted (exit 130 for SIGINT, 143 for SIGTERM) with
a message that says how to resume.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from ..errors import TlexportError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a run was training."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingInterrupted(KeyboardInterrupt):
    """A run was stopped by Ctrl-C or SIGTERM; the message says what is saved and how to go on.
    A KeyboardInterrupt, as Ctrl-C is, so `except Exception` does not swallow it; `exit_code` is
    130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum

    def as_error(self) -> TlexportError:
        """The same message and exit code as a TlexportError (for the CLI's one-line report)."""
        error = TlexportError(str(self))
        error.exit_code = self.exit_code
        return error


class _State:
    deferring = 0
    pending: int | None = None


def _handler(signum, frame):
    if _State.deferring:
        _State.pending = signum
        return
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise Stopped inside the block (in the main thread; elsewhere the
    process keeps its handlers). The previous handlers are back when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        with deferred():  # a signal while the handlers are put back is raised after, not lost
            for s, handler in saved.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
    """A stop signal arriving inside the block is raised when it ends (the block always finishes)."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1
        if not _State.deferring and _State.pending is not None:
            signum, _State.pending = _State.pending, None
            raise Stopped(signum)


def signal_number(exc: BaseException) -> int:
    """SIGTERM for a Stopped by SIGTERM, SIGINT for any other KeyboardInterrupt (Ctrl-C)."""
    return getattr(exc, "signum", signal.SIGINT)
