"""Typed export options, one dataclass per concern, handed to every builder in `Job.options`.

`--int8-fallback` and `--calib-method` mean one thing for every format that quantizes (see
docs/formats.md, "int8"); a format that cannot honour a value refuses it up front, from its
spec's `Int8Support`, with a one-line reason (exit 2): `check_int8` is that one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..formats import registry
from ..formats.onnx.options import OnnxOptions
from ..formats.ort.options import OrtOptions
from ..formats.spec import CALIB_METHODS
from ..tables.metadata import MAX_BATCH

FALLBACKS = ("auto", "none")


def parse_fallback(value) -> str | tuple[str, ...]:
    """`--int8-fallback`: "auto", "none", or node names ("stem"/"head" name the first convolution
    and the classifier) as a comma-separated string or a sequence.

    Raises:
        UsageError: an empty list.
    """
    if isinstance(value, str):
        if value.strip() in FALLBACKS:
            return value.strip()
        value = value.split(",")
    names = tuple(dict.fromkeys(v.strip() for v in value if v and v.strip()))
    if not names:
        raise UsageError("--int8-fallback takes auto, none, or node names separated by commas")
    if len(names) == 1 and names[0] in FALLBACKS:
        return names[0]
    return names


@dataclass(frozen=True)
class Calibration:
    """int8 calibration. `method` None: the format's own default (its spec's
    `Int8Support.default_method`); `data` None: the run's train split."""

    method: str | None = None
    size: int = 256
    data: Path | None = None

    def __post_init__(self):
        if self.method is not None and self.method not in CALIB_METHODS:
            raise UsageError(f"unknown calibration method {self.method}; choose from {', '.join(CALIB_METHODS)}")
        if int(self.size) < 1:
            raise UsageError("--calib-size must be at least 1")


@dataclass(frozen=True)
class Int8Options:
    """`fallback`: "auto" | "none" | node names kept in float; None: the architecture's default."""

    fallback: str | tuple[str, ...] | None = None
    calibration: Calibration = field(default_factory=Calibration)

    def policy(self, arch_default: str) -> str | tuple[str, ...]:
        return parse_fallback(self.fallback or arch_default)


@dataclass(frozen=True)
class Batch:
    """The batch dimension of every artifact: free (`fixed` None) or a fixed size."""

    fixed: int | None = None

    @property
    def dynamic(self) -> bool:
        return self.fixed is None

    @classmethod
    def parse(cls, value) -> "Batch":
        """'dynamic' or a positive integer (UsageError otherwise)."""
        if str(value) == "dynamic":
            return cls()
        try:
            fixed = int(value)
        except ValueError:
            fixed = 0
        if not 1 <= fixed <= MAX_BATCH:  # the bound the embedded metadata's schema holds it to
            raise UsageError(f"--batch must be 'dynamic' or an integer from 1 to {MAX_BATCH}, not {value!r}")
        return cls(fixed)


@dataclass(frozen=True)
class ExportOptions:
    """Everything the user chose besides formats and precisions.

    Args:
        batch: fixed or free batch dimension.
        device: "cpu", or "cuda" for GPU-only variants and verification on the GPU too.
        int8: fallback policy and calibration.
        onnx: ONNX's options (opset, fp16 I/O, baked preprocessing), shared by the formats built
            from its files.
        verify: compare every artifact with torch-eager and fail on a broken gate.
        ort: ONNX Runtime mobile's conversion target.
        dynamic_size: leave the image's height and width free (`--dynamic-size`), in the formats
            whose spec says `dynamic_size`; verified at several sizes.
    """

    batch: Batch = field(default_factory=Batch)
    device: str = "cpu"
    int8: Int8Options = field(default_factory=Int8Options)
    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    verify: bool = True
    ort: OrtOptions = field(default_factory=OrtOptions)
    dynamic_size: bool = False


def check_dynamic_size(formats, options: ExportOptions) -> None:
    """Refuse `--dynamic-size` for a requested format that cannot leave height and width free.

    Raises:
        UsageError: one line naming those formats and the ones that can.
    """
    if not options.dynamic_size:
        return
    refused = [f for f in formats if not registry.get(f).dynamic_size]
    if refused:
        able = [name for name, s in registry.FORMATS.items() if s.dynamic_size]
        raise UsageError(f"--dynamic-size: {', '.join(refused)} cannot leave the image size free; "
                         f"formats that can: {', '.join(able)}")


def check_int8(formats, precisions, int8: Int8Options) -> None:
    """Refuse, before any work, an int8 option a requested format cannot honour.

    Raises:
        UsageError: one line naming the option, the format and why.
    """
    if "int8" not in precisions:
        return
    method = int8.calibration.method
    for name in formats:
        support = registry.get(name).int8
        if support is None:
            continue  # no int8 in this format: skipped with a note like any undeclared precision
        if method is not None and not support.calib_methods:
            raise UsageError(f"--calib-method {method}: {name} int8 is not calibrated ({support.why}); "
                             "drop --calib-method")
        if method is not None and method not in support.calib_methods:
            raise UsageError(f"--calib-method {method}: {name} int8 cannot honour it ({support.why}); "
                             f"it takes {' or '.join(support.calib_methods)}, or no --calib-method for "
                             f"its default ({support.default_method})")
        if isinstance(int8.fallback, tuple) and not support.per_layer:
            raise UsageError(f"--int8-fallback {','.join(int8.fallback)}: {name} int8 cannot keep layers in "
                             f"float ({support.why}); use auto or none")
