"""The one list of export formats, one line per format. The export pipeline,
runtime discovery, metadata readers, manifest checks, CLI choices and help and docs/formats.md
all iterate `FORMATS`; `tests/test_formats.py` holds every row consistent (a builder, a reader,
runtimes that exist, unique suffixes, known extras, precisions its builder makes).

Each row is the name of a package under `tlexport/formats/` (its `SPEC` is imported from it), so
adding a format is one line here. Order matters: formats built from another (`built_from`) come
after it, so they reuse the files it staged. Torch-free to import (a spec imports nothing heavy).
"""

from __future__ import annotations

import importlib

from ..errors import UsageError
from .spec import REFERENCE_RUNTIME, FormatSpec

PACKAGES = (
    "onnx",
    "torchscript",
    "pt2",
    "openvino",
    "executorch",
    "tflite",
    "ort",
    "triton",
    "ncnn",
    "coreml",
    "web",
)

FORMATS: dict[str, FormatSpec] = {s.name: s for s in (
    importlib.import_module(f"{__package__}.{name}").SPEC for name in PACKAGES)}


def get(name: str) -> FormatSpec:
    """The row of `name` (UsageError naming the choices for an unknown one)."""
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def in_all() -> tuple[str, ...]:
    """What `--format core` means: the formats that need no optional extra (onnx, torchscript,
    pt2); `--format all` is every format that can be exported here (exporters.pipeline.expand_all)."""
    return tuple(name for name, f in FORMATS.items() if f.in_all)


def int8_source(fmt: str) -> str:
    """The format whose int8 file `fmt`'s int8 is: the format it is built from when it declares
    that format's own `Int8Support` row (ORT mobile, Triton and web ship the int8 ONNX file,
    converted: `int8=INT8` imported from onnx), else itself (OpenVINO declares its own row: NNCF
    calibrates its int8 IR). Its `--calib-method FORMAT=METHOD` names that format."""
    spec = get(fmt)
    source = spec.built_from
    return source if source and spec.int8 is not None and spec.int8 is get(source).int8 else fmt


def runtime_names() -> tuple[str, ...]:
    """Every runtime name: the reference (torch-eager), then those the format packages provide."""
    return tuple(dict.fromkeys([REFERENCE_RUNTIME, *(n for f in FORMATS.values() for n in f.provides)]))
