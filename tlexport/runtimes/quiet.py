"""Silence converters that print progress from C++ and Python straight to the process's stdout and
stderr (ExecuTorch, litert-torch): `--json` needs a clean stdout, and none of it is for the user.
A failure still surfaces as the exception it raises."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def silenced():
    """Point file descriptors 1 and 2 at a scratch file (C++ writes there directly) and quiet
    Python's warnings and the converters' loggers for the duration."""
    loggers = [logging.getLogger(n) for n in ("", "torch", "executorch", "litert_torch", "absl", "jax", "torchao")]
    levels = [lg.level for lg in loggers]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

