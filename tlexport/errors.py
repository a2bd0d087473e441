"""Typed errors. The library raises them; the CLI turns them into one line and an exit code.

The exit code is a property of the error's class, so the same mistake gets the same code in
every command: 2 when what the command line names cannot be acted on (a bad value, a path that
does not exist or is the wrong kind of thing), 1 when a check failed or what a file holds is bad
(data, weights, a malformed manifest, a parity gate) or the machine cannot do it (no GPU).
"""

import errno


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


class FileSystemError(TlexportError):
    """The operating system refused to read or write a file (full disk, quota, file-size limit,
    read-only filesystem, permissions...): exit 1, one line naming the file and the cause."""


class DiskFull(FileSystemError):
    """A write failed for lack of space (or quota); nothing half-written is left."""


class BadPath(MissingInput):
    """A path the command line names cannot be looked at (a name too long for the filesystem, a
    symbolic-link loop, a file used as a folder): exit 2 like a path that does not exist."""


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


# The cause of every OS error a read, a write or a path lookup can give, in the words shown to the
# user; the symbolic name follows in brackets so a search finds it.
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit such as ulimit -f, or the filesystem's maximum)",
    errno.EROFS: "read-only filesystem",
    errno.ENAMETOOLONG: "a name in the path is longer than the filesystem allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "too many levels of symbolic links (a link loop)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "it does not exist",
    errno.EEXIST: "it already exists",
    errno.EIO: "input/output error (a failing disk or a lost network mount)",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files on the system",
    errno.ENXIO: "no reader on the other end, or no such device",
    errno.EBUSY: "the file or device is busy",
    errno.ETXTBSY: "the file is busy (a running program)",
    errno.EXDEV: "it is on another filesystem",
    errno.ENOTEMPTY: "the folder is not empty",
    errno.EMLINK: "too many links",
    errno.EINVAL: "invalid argument for this filesystem",
}
# Errors that say the path itself cannot name a file: a bad path argument when the user typed it.
PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR})


def os_cause(e: OSError) -> str:
    """The cause of an OS error in words, with its symbolic errno name ("read-only filesystem
    (EROFS)")."""
    code = errno.errorcode.get(e.errno or -1)
    text = _CAUSES.get(e.errno) or e.strerror or type(e).__name__
    return f"{text} ({code})" if code else text


def os_error(e: OSError, path=None, action: str = "write", argument: bool = False) -> TlexportError:
    """The one mapping of an OS error to a typed error: "cannot write PATH: no space left on the
    device (ENOSPC)". `path` defaults to the file the error names (a write to an open file names
    none: give it). An already mapped error is returned as is.

    Args:
        argument: the path came from the command line, so an error of the path itself
            (`PATH_ERRNOS`, ENOENT, EEXIST: a file where a folder is named) is bad usage (BadPath, exit 2); otherwise FileSystemError
            (DiskFull for ENOSPC/EDQUOT), exit 1.
    """
    if isinstance(e, TlexportError):
        return e
    name = path if path is not None else (e.filename if e.filename is not None else "a file")
    message = f"cannot {action} {name}: {os_cause(e)}"
    if argument and (e.errno in PATH_ERRNOS or e.errno in (errno.ENOENT, errno.EEXIST)):
        return BadPath(message)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(message)
    return FileSystemError(message)


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
