"""Child processes and worker pools that never outlive the command that started them.

- `die_with_parent`: a child started with it as `preexec_fn` (or a pool worker with it as
  `initializer`) gets SIGKILL from the kernel when tlexport dies, SIGKILL of tlexport included
  (Linux's parent-death signal; elsewhere a no-op, the process-group kill below still applies).
- `dying_with_us(argv)`: the argv and `preexec_fn` for such a child. Where forking is not safe
  (below) the child is not forked from this process with Python code to run between fork and
  exec: a small launcher (a fresh Python, started the fork-free way) sets the parent-death signal
  on itself and execs the program, so the guarantee holds without a fork after JAX is loaded.
- `signals_unwind`: while a command runs, SIGTERM and SIGHUP raise `Terminated` (a
  KeyboardInterrupt, as Ctrl-C's SIGINT is) in the main thread, so every `finally` that stops a
  browser, a converter or a pool runs before the process ends (exit 128 + the signal).
- `pool_context`: "fork" only while this process has a single Python thread and no multithreaded
  library that forbids forking is loaded (JAX, TensorFlow: a forked child could inherit a lock
  held by a thread that does not exist there); "forkserver" otherwise.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
UNWIND_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _prctl():
    """libc's prctl, looked up in the parent: the child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# Run as `python -S -c LAUNCH PARENT_PID PATH ARGV0 ARGS...`: the launcher is our child, sets the
# parent-death signal on itself (kept across exec), gives up when its parent already died, and
# becomes PROGRAM, which therefore dies with us.
LAUNCH = r"""
import ctypes, ctypes.util, os, signal, sys
ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
os.execv(sys.argv[2], sys.argv[3:])
"""


def dying_with_us(argv) -> tuple[list[str], object]:
    """(argv, preexec_fn) for a child that dies with this process, SIGKILL included (Linux).

    Forks only where `fork_safe()`: otherwise the argv goes through `LAUNCH` and preexec_fn is
    None, so subprocess starts it without running Python in a forked copy of this process.

    Raises:
        FileNotFoundError: the program is not found (as Popen would, before anything starts).
    """
    import os
    import shutil

    argv = [str(a) for a in argv]
    if _PRCTL is None:
        return argv, None
    if fork_safe():
        return argv, die_with_parent
    program = shutil.which(argv[0])
    if program is None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    return [sys.executable, "-S", "-c", LAUNCH, str(os.getpid()), os.path.abspath(program), *argv], None


# Libraries that run threads of their own and say so at fork (JAX registers an at-fork warning:
# "os.fork() was called ... JAX is multithreaded, so this will likely lead to a deadlock"). The
# tflite and LiteRT converters load them. Idle BLAS/OpenMP pools, which every numpy or torch
# process has, are forked by torch's own DataLoader and do not count.
FORK_UNSAFE = ("jax", "jaxlib", "tensorflow", "tf_keras", "ai_edge_torch", "ai_edge_litert")


def fork_safe() -> bool:
    """Whether forking now is safe: this is the only Python thread and no library from
    FORK_UNSAFE is loaded."""
    return threading.active_count() == 1 and not any(m in sys.modules for m in FORK_UNSAFE)


def pool_context():
    """The multiprocessing context for a worker pool started now (see the module docstring)."""
    import multiprocessing

    if sys.platform.startswith("linux") and fork_safe():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a command ran; `exit_code` is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.exit_code = signum, 128 + signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def signals_unwind():
    """SIGTERM and SIGHUP raise Terminated inside the block (main thread only; a handler the
    process had set itself, not the default, is left alone). Restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for s in UNWIND_SIGNALS:
        if signal.getsignal(s) in (signal.SIG_DFL, None):
            saved[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
