"""Keep third-party chatter off the user's terminal, and keep real errors.

Converters and runtimes print progress and warnings from C++ straight to the process's file
descriptors 1 and 2 (ExecuTorch's cpuinfo lines, TFLite's "Created TensorFlow Lite XNNPACK
delegate", pnnx), from Python through `warnings` (torch's `_pytree` deprecations) and through
logging (absl, NNCF, onnxruntime's quantization tools). `--json` needs a clean stdout, a progress
line is broken by any of it, and none of it is for the user. `--debug` shows all of it.

- `configure(debug)`: once per command (the CLI's error boundary): warnings and third-party
  loggers, TF/absl's C++ log level, onnxruntime's default log severity and torch's logger (both set
  when the library is imported: torch resets its logger's level on import).
- `silenced()`: around a noisy call, fds 1 and 2 point at a scratch file; what was written is
  attached to an exception that leaves the block (`captured(e)`), so a failure keeps its cause.
  The CLI's consoles write to their own duplicate of the terminal (`cli.common.console`), so a
  progress line keeps moving while the fds are redirected.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import logging
import os
import sys
import tempfile
import warnings

VERBOSE = False  # --debug: silence nothing
ORT_QUIET = 3  # onnxruntime's ERROR: drops its warnings ("Removing initializer ...")
NOISY_LOGGERS = ("", "torch", "executorch", "litert_torch", "absl", "jax", "torchao", "nncf", "tensorflow",
                 "coremltools", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")
TAIL_LINES = 20  # lines of a failed call's own output kept with its exception


def configure(debug: bool) -> None:
    """Outside --debug: third-party warnings and INFO/WARNING logs off, TF's C++ logs off (before
    TF loads), onnxruntime's warnings off. tlexport's own warnings still show."""
    global VERBOSE
    VERBOSE = bool(debug)
    if VERBOSE:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF/LiteRT C++ logging: errors only
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"tlexport(\.|$)")
    for name in NOISY_LOGGERS[1:]:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_on_import()


def _quiet_torch(torch) -> None:
    """torch sets its own logger back to WARNING when it is imported (torch._logging), and its
    `_pytree` deprecation lines come through it."""
    logging.getLogger("torch").setLevel(logging.ERROR)


def _quiet_ort(ort) -> None:
    with contextlib.suppress(Exception):
        ort.set_default_logger_severity(ORT_QUIET)


AFTER_IMPORT = {"onnxruntime": _quiet_ort, "torch": _quiet_torch}


def _quiet_on_import() -> None:
    """Quiet each of `AFTER_IMPORT` now if it is loaded, else right after it is imported
    (importing them here would slow every command down)."""
    for name, quiet in AFTER_IMPORT.items():
        if name in sys.modules:
            quiet(sys.modules[name])
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when a module of `AFTER_IMPORT` is imported, wraps its loader so its
    quieting runs as soon as the module has run."""

    def find_spec(self, name, path, target=None):
        if name not in AFTER_IMPORT or VERBOSE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _AfterExec(spec.loader, AFTER_IMPORT[name])
                return spec
        return None


class _AfterExec(importlib.abc.Loader):
    def __init__(self, loader, then):
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.then(module)


def captured(exc: BaseException) -> str:
    """The output a `silenced()` call wrote before it raised `exc` (or what raised it), "" if none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = getattr(exc, "tlexport_output", "")
        if text:
            return text
        exc = exc.__cause__ or exc.__context__
    return ""


@contextlib.contextmanager
def silenced():
    """Point file descriptors 1 and 2 at a scratch file (C++ writes there directly) and quiet
    Python's warnings and the converters' loggers for the block; with --debug, do nothing. An
    exception leaving the block carries the last lines written (`captured`, and a note shown in
    --debug tracebacks)."""
    if VERBOSE:
        yield
        return
    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        py_out = io.StringIO()
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            with warnings.catch_warnings(), contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_out):
                warnings.simplefilter("ignore")
                yield
        except BaseException as e:
            _attach(e, sink, py_out.getvalue())
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _attach(exc: BaseException, sink, python_text: str) -> None:
    """Keep the tail of what the failed call wrote with its exception."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace") + python_text
        lines = [ln for ln in text.splitlines() if ln.strip()][-TAIL_LINES:]
        if lines and not getattr(exc, "tlexport_output", ""):
            exc.tlexport_output = "\n".join(lines)
            exc.add_note("output of the failed call (last lines):\n" + exc.tlexport_output)
