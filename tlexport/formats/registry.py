"""The one list of export formats. One line per format: its package's `SPEC`. The export pipeline,
runtime discovery, metadata readers, manifest checks, CLI choices and help and docs/formats.md
all iterate `FORMATS`; `tests/test_formats.py` holds every row consistent (a builder, a reader,
runtimes that exist, unique suffixes, known extras, precisions its builder makes).

Order matters: formats built from another (`built_from`) come after it, so they reuse the files
it staged. Torch-free to import.
"""

from __future__ import annotations

from ..errors import UsageError
from . import executorch, onnx, openvino, ort, pt2, tflite, torchscript, triton, web
from .spec import REFERENCE_RUNTIME, FormatSpec

FORMATS: dict[str, FormatSpec] = {s.name: s for s in (
    onnx.SPEC,
    torchscript.SPEC,
    pt2.SPEC,
    openvino.SPEC,
    executorch.SPEC,
    tflite.SPEC,
    ort.SPEC,
    triton.SPEC,
    web.SPEC,
)}


def get(name: str) -> FormatSpec:
    """The row of `name` (UsageError naming the choices for an unknown one)."""
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def in_all() -> tuple[str, ...]:
    """What `--format all` means: the formats that need no optional extra."""
    return tuple(name for name, f in FORMATS.items() if f.in_all)


def runtime_names() -> tuple[str, ...]:
    """Every runtime name: the reference (torch-eager), then those the format packages provide."""
    return tuple(dict.fromkeys([REFERENCE_RUNTIME, *(n for f in FORMATS.values() for n in f.provides)]))
