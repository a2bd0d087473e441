"""Typed errors. The library raises them; the CLI turns them into one line and an exit code.

The exit code is a property of the error's class, so the same mistake gets the same code in
every command: 2 when what the command line names cannot be acted on (a bad value, a path that
does not exist or is the wrong kind of thing), 1 when a check failed or what a file holds is bad
(data, weights, a malformed manifest, a parity gate) or the machine cannot do it (no GPU).
"""


class TlexportError(Exception):
    """Base class: the message is written for the user and shown as is."""

    exit_code = 1


class UsageError(TlexportError):
    """The command line asked for something that cannot be done (exit 2, like Click)."""

    exit_code = 2


class MissingInput(UsageError):
    """A file or folder named on the command line does not exist, or is a file where a folder
    is needed (or the reverse)."""


class NotAnExport(UsageError):
    """A folder that exists but holds no tlexport export (no manifest.json, no model file)."""


class NotARun(UsageError):
    """A folder that exists but holds no tlexport training run (no run.json)."""


class DataError(TlexportError):
    """The image folder is missing, empty, badly laid out or unreadable."""


class WeightsError(TlexportError):
    """Weights cannot be found, read or do not fit the architecture."""


class ExportError(TlexportError):
    """An artifact could not be written or failed its own checks."""


class PartialExport(ExportError):
    """Some artifacts failed; the others were published. `result` is the export's result (its
    `failed` rows say which and why). No longer raised by `export()`, which returns that result
    with `.passed` False (as `parity()` does); kept so that older `except PartialExport` clauses
    still import."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class ParityError(TlexportError):
    """Runtimes disagree beyond the gates."""


class RuntimeUnavailable(TlexportError):
    """A runtime or device is not available on this machine."""


class NoGPU(RuntimeUnavailable):
    """`--device cuda` on a machine where torch sees no CUDA GPU: the command line is right,
    this machine cannot do it (exit 1)."""


class ArtifactError(TlexportError):
    """An export folder, manifest or artifact is malformed, untrusted or not what it claims."""


def require_gpu(devices) -> None:
    """Refuse a CUDA device (`cuda`, `cuda:N`, in a name or a list of names) on a machine where
    torch sees no GPU, before any work is done; `auto` and `cpu` pass. The one check behind
    every command's `--device` (torch is imported only when a CUDA device is asked for).

    Raises:
        NoGPU: one line naming the flag and the way out.
    """
    devices = (devices,) if isinstance(devices, str) else tuple(devices or ())
    if not any(str(d).startswith("cuda") for d in devices):
        return
    import torch

    if not torch.cuda.is_available():
        raise NoGPU("--device cuda needs a CUDA GPU, and there is no CUDA GPU here (torch sees none); "
                    "use --device cpu")


def first_line(exc: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """The first line of an exception's message, cut to `limit` characters: what a one-line
    error shows of a library's (often multi-line) message. Falls back to the type's name.

    Args:
        with_type: prefix the exception's type name ("ValueError: ...").
    """
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit] if lines else ""
    if with_type or not text:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text
