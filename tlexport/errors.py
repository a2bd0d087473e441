"""Typed errors. The library raises them; the CLI turns them into one line and an exit code."""


class TlexportError(Exception):
    """Base class: the message is written for the user and shown as is."""

    exit_code = 1


class UsageError(TlexportError):
    """The command line asked for something that cannot be done (exit 2, like Click)."""

    exit_code = 2


class DataError(TlexportError):
    """The image folder is missing, empty, badly laid out or unreadable."""


class WeightsError(TlexportError):
    """Weights cannot be found, read or do not fit the architecture."""


class ExportError(TlexportError):
    """An artifact could not be written or failed its own checks."""


class PartialExport(ExportError):
    """Some artifacts failed; the others were published. `result` is the export's result (its
    `failed` rows say which and why)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class ParityError(TlexportError):
    """Runtimes disagree beyond the gates."""


class RuntimeUnavailable(TlexportError):
    """A runtime or device is not available on this machine."""


class ArtifactError(TlexportError):
    """An export folder, manifest or artifact is malformed, untrusted or not what it claims."""


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
