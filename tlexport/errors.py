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


class ParityError(TlexportError):
    """Runtimes disagree beyond the gates."""


class RuntimeUnavailable(TlexportError):
    """A runtime or device is not available on this machine."""
