"""Typed export options, one dataclass per concern, handed to every builder in `Job.options`.

A format's own options are its package's (`FormatSpec.options`, fields declared with
`tlexport.formats.options.option`): `ExportOptions` holds them by format name and never imports a
format; `from_keywords` maps the flat keywords of the CLI and of `export()` onto them.

`--int8-fallback` and `--calib-method` mean one thing for every format that quantizes (see
docs/formats.md, "int8"); a format that cannot honour a value refuses it up front, from its
spec's `Int8Support`, with a one-line reason (exit 2): `check_int8` is that one place.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import UsageError
from ..formats import registry
from ..formats.options import flag_of, keyword_of, option_fields
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
    """int8 calibration. `method` None: each format's own default (its spec's
    `Int8Support.default_method`) and, under `--int8-fallback auto`, its other methods too when the
    default misses the gate; `per_format`: ((format, method), ...) given as `FORMAT=METHOD`, for
    that format only; `data` None: the run's train split."""

    method: str | None = None
    size: int = 256
    data: Path | None = None
    per_format: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for m in (self.method, *(m for _, m in self.per_format)):
            if m is not None and m not in CALIB_METHODS:
                raise UsageError(f"unknown calibration method {m}; choose from {', '.join(CALIB_METHODS)}")
        if int(self.size) < 1:
            raise UsageError("--calib-size must be at least 1")

    @classmethod
    def parse(cls, value, size: int = 256, data: Path | None = None) -> "Calibration":
        """`--calib-method`: METHOD (every format that can honour it), FORMAT=METHOD items, or
        both, comma-separated ("onnx=percentile,tflite=minmax"); a mapping {format: method} too."""
        if value is None:
            return cls(None, size, data)
        items = list(value.items()) if isinstance(value, dict) else \
            [tuple(v.split("=", 1)) if "=" in v else (None, v) for v in str(value).split(",") if v.strip()]
        overall = [m.strip() for f, m in items if f is None]
        if len(overall) > 1:
            raise UsageError(f"--calib-method {value}: give one method for every format, or FORMAT=METHOD")
        per = tuple((f.strip(), m.strip()) for f, m in items if f is not None)
        for fmt, _ in per:
            _check_per_format(fmt, value)
        _check_openvino(per, value)
        return cls(overall[0] if overall else None, size, data, per)

    def method_for(self, fmt: str) -> str | None:
        """The method `fmt` is asked for: its own `FORMAT=METHOD`, else the overall one."""
        return dict(self.per_format).get(fmt, self.method)

    def refusal(self, fmt: str) -> str | None:
        """Why `fmt`'s int8 cannot honour the method asked of it (None: it can, or none was asked).
        A format that calibrates nothing (weight-only int8) ignores an overall method."""
        support, method = registry.get(fmt).int8, self.method_for(fmt)
        if support is None or method is None or method in support.calib_methods:
            return None
        if not support.calib_methods:
            return None if fmt not in dict(self.per_format) else f"{fmt} int8 is not calibrated ({support.why})"
        return (f"--calib-method {method}: {fmt} int8 cannot honour it ({support.why}); it takes "
                f"{' or '.join(support.calib_methods)}")

    def check(self, fmt: str) -> str | None:
        """The method `fmt`'s builder calibrates with (None: the format's default).

        Raises:
            ExportError: `fmt` cannot honour the overall method (its int8 alone fails, one line).
        """
        from ..errors import ExportError

        why = self.refusal(fmt)
        if why:
            raise ExportError(f"{why}; give methods per format, e.g. --calib-method {self.method},{fmt}="
                              f"{registry.get(fmt).int8.calib_methods[0]}")
        return self.method_for(fmt) if registry.get(fmt).int8.calib_methods else None


def _check_per_format(fmt: str, value) -> None:
    """A FORMAT=METHOD item must name a format whose own int8 is calibrated (ORT, Triton and web
    ship the ONNX int8 file: its method is onnx's, `registry.int8_source`)."""
    if fmt not in registry.names():
        raise UsageError(f"--calib-method {value}: no format named {fmt!r}")
    spec = registry.get(fmt)
    if spec.int8 is None:
        raise UsageError(f"--calib-method {value}: {fmt} has no int8")
    source = registry.int8_source(fmt)  # the format whose int8 file this one's is (ORT's is ONNX's)
    if source != fmt:
        raise UsageError(f"--calib-method {value}: {fmt} int8 is the {source.upper()} int8 file converted; "
                         f"give {source}=METHOD")


def _check_openvino(per: tuple, value) -> None:
    """OpenVINO's own calibration is NNCF's min/max; its percentile/entropy int8 is the ONNX int8
    file converted, calibrated as onnx is."""
    method = dict(per).get("openvino")
    if method not in (None, "minmax") and dict(per).get("onnx") != method:
        raise UsageError(f"--calib-method {value}: openvino {method} int8 is the ONNX int8 file converted; "
                         f"give onnx={method} too (openvino=minmax calibrates with NNCF)")


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


def option_type(fmt: str) -> type | None:
    """The options class of a format (`FormatSpec.options` in `<package>.options`), or None."""
    spec = registry.get(fmt)
    if spec.options is None:
        return None
    return getattr(importlib.import_module(f"{spec.package}.options"), spec.options)


def option_types() -> dict[str, type]:
    """{format: its options class} for every registered format that has options, in registry
    order (read on each call: a format registered at run time, as tests do, is seen at once)."""
    return {name: cls for name in registry.names() if (cls := option_type(name)) is not None}


def format_keywords() -> dict[str, tuple[str, str]]:
    """{keyword: (format, field)}: every format option by its `export()` keyword (`opset`,
    `ort_target`), which is also its Click parameter's name.

    Raises:
        ValueError: two formats claim one keyword, or a format claims a generic one (a registry
            bug, caught by the tests).
    """
    out = {}
    for fmt, cls in option_types().items():
        for f in option_fields(cls):
            key = keyword_of(f)
            if key in out or key in GENERIC:
                raise ValueError(f"{fmt}'s option {flag_of(f)} takes the keyword {key!r}, which "
                                 f"{out[key][0] if key in out else 'export'} already has")
            out[key] = (fmt, f.name)
    return out


# export()'s keywords that are not a format's: they make the typed options below.
GENERIC = ("batch", "device", "calib_size", "calib_method", "calib_data", "int8_fallback", "verify", "dynamic_size",
           "replace")


@dataclass(frozen=True)
class ExportOptions:
    """Everything the user chose besides formats and precisions.

    Args:
        batch: fixed or free batch dimension (a `Batch`, or "dynamic" / an integer).
        device: "cpu", or "cuda" for GPU-only variants and verification on the GPU too.
        int8: fallback policy and calibration.
        verify: compare every artifact with torch-eager and fail on a broken gate.
        dynamic_size: leave the image's height and width free (`--dynamic-size`), in the formats
            whose spec says `dynamic_size`; verified at several sizes.
        replace: remove every tlexport file of the output folder this export does not make
            (`--replace`; see `exporters.publish`).
        format_options: {format name: its options object} (the class its spec's `options` names,
            e.g. `{"onnx": OnnxOptions(opset=17), "ort": OrtOptions(target="amd64")}`); a format
            left out gets its class's defaults (`of`).

    `from_keywords` makes them from the flat keywords of the CLI (`opset=17, ort_target="amd64",
    calib_method="entropy"`).
    """

    batch: Batch = field(default_factory=Batch)
    device: str = "cpu"
    int8: Int8Options = field(default_factory=Int8Options)
    verify: bool = True
    dynamic_size: bool = False
    replace: bool = False
    format_options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.batch, Batch):
            object.__setattr__(self, "batch", Batch.parse(self.batch))
        types = option_types()
        for name, value in self.format_options.items():
            if name not in types:
                raise UsageError(f"format_options: {name!r} is no format with options; those with options: "
                                 f"{', '.join(types) or 'none'}")
            if not isinstance(value, types[name]):
                raise UsageError(f"format_options[{name!r}] must be a {types[name].__name__}, not "
                                 f"{type(value).__name__}")
        object.__setattr__(self, "format_options", dict(self.format_options))  # a copy: the caller's stays theirs

    def of(self, fmt: str):
        """The options of format `fmt`: those given, else its options class's defaults.

        Raises:
            UsageError: `fmt` has no options class.
        """
        if fmt in self.format_options:
            return self.format_options[fmt]
        cls = option_type(fmt)
        if cls is None:
            raise UsageError(f"format {fmt} has no options")
        return cls()

    def check(self, formats) -> None:
        """Every registered format's options checked against the formats requested (each refuses,
        in one line, an option no requested format honours: `--ort-target amd64` without ort)."""
        for name, cls in option_types().items():
            check = getattr(self.of(name), "check", None)
            if check is not None:
                check(formats)

    @classmethod
    def from_keywords(cls, **keywords) -> "ExportOptions":
        """The flat keywords of `tlexport export` and of `export()` as typed options: the GENERIC
        ones (batch="dynamic", calib_method="entropy", ...) and every format option by its keyword
        (`format_keywords`: opset=17, fp16_io=True, targets=("onnxruntime==1.17",), ort_target=...).

        Raises:
            TypeError: a keyword that is neither (as Python says of an unknown argument).
            UsageError: a malformed value.
        """
        by_keyword = format_keywords()
        unknown = [k for k in keywords if k not in GENERIC and k not in by_keyword]
        if unknown:
            raise TypeError(f"export() got an unexpected keyword argument {unknown[0]!r}")
        generic = {k: v for k, v in keywords.items() if k in GENERIC}
        int8 = _int8_options(generic)
        per_format: dict[str, dict] = {}
        for key, value in keywords.items():
            if key in by_keyword:
                fmt, name = by_keyword[key]
                per_format.setdefault(fmt, {})[name] = value
        given = {fmt: option_type(fmt)(**values) for fmt, values in per_format.items()}
        return cls(Batch.parse(generic.get("batch", "dynamic")), generic.get("device", "cpu"), int8,
                   bool(generic.get("verify", True)), bool(generic.get("dynamic_size", False)),
                   bool(generic.get("replace", False)), given)


def _int8_options(generic: dict) -> Int8Options:
    """`calib_size`, `calib_method`, `calib_data` and `int8_fallback` as Int8Options."""
    data = generic.get("calib_data")
    data = Path(data).expanduser().absolute() if data is not None else None
    calibration = Calibration.parse(generic.get("calib_method"), int(generic.get("calib_size", 256)), data)
    fallback = generic.get("int8_fallback")
    return Int8Options(None if fallback is None else parse_fallback(fallback), calibration)


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
    """Refuse, before any work, an int8 option a requested format cannot honour. A method given
    for every format (`--calib-method percentile`) is refused here only when no requested format
    can honour it; otherwise each format that cannot fails its own int8 at build with
    `Calibration.refusal` (one line) and the others go on.

    Raises:
        UsageError: one line naming the option, the format and why.
    """
    if "int8" not in precisions:
        return
    cal = int8.calibration
    calibrated = [n for n in formats if registry.get(n).int8 is not None and registry.get(n).int8.calib_methods]
    for name in formats:
        support = registry.get(name).int8
        if support is None:
            continue  # no int8 in this format: skipped with a note like any undeclared precision
        method = cal.method_for(name)
        if name in dict(cal.per_format) and not support.calib_methods:
            raise UsageError(f"--calib-method {method}: {name} int8 is not calibrated ({support.why}); "
                             "drop --calib-method")
        if name in dict(cal.per_format) and cal.refusal(name):
            raise UsageError(cal.refusal(name))
        if isinstance(int8.fallback, tuple) and not support.per_layer:
            raise UsageError(f"--int8-fallback {','.join(int8.fallback)}: {name} int8 cannot keep layers in "
                             f"float ({support.why}); use auto or none")
    _check_overall(formats, cal, calibrated)


def _check_overall(formats, cal: Calibration, calibrated: list[str]) -> None:
    """An overall method that no requested int8 format can honour is a usage error (one line)."""
    method = cal.method
    if method is None:
        return
    own = [f for f in formats if registry.get(f).int8 is not None and f not in dict(cal.per_format)]
    if not own:
        return
    if not any(f in calibrated for f in own):
        name = own[0]
        support = registry.get(name).int8
        raise UsageError(f"--calib-method {method}: {name} int8 is not calibrated ({support.why}); drop --calib-method")
    if all(cal.refusal(f) for f in own if f in calibrated):
        name = next(f for f in own if f in calibrated)
        support = registry.get(name).int8
        raise UsageError(f"--calib-method {method}: {name} int8 cannot honour it ({support.why}); "
                         f"it takes {' or '.join(support.calib_methods)}, or no --calib-method for "
                         f"its default ({support.default_method})")
