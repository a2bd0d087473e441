"""The optional packages, derived from the format registry: which ones each format needs to be
exported (its spec's `needs`), and the one install hint per package that every message naming
it uses (export refuses a format before any heavy work; runtimes and metadata readers say the
same when they cannot load)."""

from __future__ import annotations

import importlib.util

from ..errors import UsageError
from ..formats import registry


def pip_hint(module: str) -> str:
    """The pip command that provides the optional package `module` (from the first format that
    needs it)."""
    for spec in registry.FORMATS.values():
        for req in spec.needs:
            if req.module == module:
                return req.pip
    return f"pip install {module}"


def not_installed(module: str, what: str | None = None) -> str:
    """"<what> needs the Python package 'module', which is not installed: <pip command>"."""
    return f"{what or module} needs the Python package '{module}', which is not installed: {pip_hint(module)}"


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(fmt: str) -> str | None:
    """The one-line reason `--format fmt` cannot be exported here, naming the pip command."""
    for req in registry.get(fmt).needs:
        if not installed(req.module):
            return not_installed(req.module, f"--format {fmt}")
    return None


def require(formats) -> None:
    """UsageError naming the first missing extra of `formats`."""
    for fmt in formats:
        reason = missing(fmt)
        if reason:
            raise UsageError(reason)
