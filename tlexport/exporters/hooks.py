"""The steps a format adds to `tlexport export` beyond building: the optional functions of its
package's `hooks` module (`tlexport/formats/<name>/hooks.py`), written down as `FormatHooks`.

The pipeline calls them and never branches on a format's name or file suffix: what an ONNX file
says about itself (opset, inputs and outputs), the opset every ONNX-based format shares, the
`--target` checks and the verification of the baked-preprocessing model are the hooks of the
ONNX package. A format without a `hooks` module has none; a hooks module
defines only those it needs, and imports its heavy packages inside them, so that a format's
dependencies load only when it is exported.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterator, Protocol

from ..formats import registry

if TYPE_CHECKING:
    from ..models import Run
    from .job import Artifact, Job
    from .options import ExportOptions

HOOKS = ("prepare", "describe", "check", "verify")


class FormatHooks(Protocol):
    """The optional functions of a format package's `hooks` module (each may be left out).

    `prepare` and `check` are called for every registered format that defines them (each decides
    whether the export concerns it: ONNX's opset matters whenever a format built from ONNX is
    exported, its `--target` checks read `.tflite` files too); `describe` and `verify` for the
    format's own artifacts.
    """

    def prepare(self, formats: tuple, options: ExportOptions) -> dict:
        """The export's shared settings this format decides, before any heavy work (ONNX:
        {"opset": N, "targets": [...]}): builders read them in `job.settings` (`job.settings["opset"]`) and the
        manifest records them with the export's settings. Raises UsageError for a bad choice."""

    def describe(self, artifact: Artifact, path: Path) -> None:
        """Fill in what only the format can read from its staged file `path` (ONNX: `opset`,
        `inputs`, `outputs`; `compat`, the oldest runtime releases that load it); the pipeline has
        set `size`, `sha256` and `companions`, and fills `inputs`/`outputs` generically when left
        empty."""

    def check(self, artifacts: list[Artifact], folder: Path, job: Job) -> None:
        """After every artifact is built and described, before verification (ONNX: each file
        against the `--target` releases). Raises ExportError (one line) to fail the export."""

    def verify(self, artifacts: list[Artifact], folder: Path, run: Run) -> None:
        """Verify the format's artifacts that parity does not run (a role other than MODEL; ONNX:
        the baked-preprocessing model, one decoded image in): set each one's `verified` and
        `verification` (False: it is dropped and listed as failed)."""


def hooks_of(fmt: str) -> ModuleType | None:
    """The `hooks` module of a format's package (None: it has none)."""
    name = f"{registry.get(fmt).package}.hooks"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def hook(fmt: str, name: str):
    """The format's hook `name` (one of HOOKS), or None."""
    module = hooks_of(fmt)
    return getattr(module, name, None) if module is not None else None


def every(name: str) -> Iterator[tuple[str, object]]:
    """(format, its hook `name`) for every registered format that defines it, in registry order."""
    for fmt in registry.names():
        call = hook(fmt, name)
        if call is not None:
            yield fmt, call


def prepare(formats, options: ExportOptions) -> dict:
    """The shared settings of this export, from every format's `prepare`."""
    settings: dict = {}
    for _, call in every("prepare"):
        settings.update(call(formats, options) or {})
    return settings


def describe(artifact: Artifact, path: Path) -> None:
    call = hook(artifact.format, "describe")
    if call is not None:
        call(artifact, path)


def check(artifacts: list[Artifact], folder: Path, job: Job) -> None:
    for _, call in every("check"):
        call(artifacts, folder, job)


def verify(artifacts: list[Artifact], folder: Path, run: Run) -> None:
    """Each format's own verification of its `artifacts` that parity does not run (not MODEL)."""
    for fmt in dict.fromkeys(a.format for a in artifacts):
        call = hook(fmt, "verify")
        if call is not None:
            call([a for a in artifacts if a.format == fmt], folder, run)
