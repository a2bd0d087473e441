"""What a format's own export option is, as data: a field of the frozen options dataclass in its
package (`<package>.options`, named by `FormatSpec.options`), declared with `option()`, which
carries what the CLI, the API and the docs need (flag, help, choices) the way training's
`TrainConfig` fields do (`tlexport.training.config.option`).

From those fields `tlexport export` derives its format flags and their help
(`tlexport/cli/formatopts.py`), `tlexport.exporters.options.ExportOptions` holds one options
object per format (`ExportOptions.of(name)`), and the flat keywords of `export()` (`opset=`,
`ort_target=`) map onto them. An options class may define `check(formats)`: it refuses, before any
work, an option no requested format honours (UsageError, one line).

Torch-free, and free of tlexport imports: it sits with the specs.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields


def option(default=MISSING, help: str = "", *, flag: str | None = None, choices: tuple = (),
           multiple: bool = False, metavar: str | None = None, keyword: str | None = None):
    """A field of a format's options dataclass, with what the CLI and the API need to know about it.

    Args:
        default: its value when the option is not given (shown in the help unless None or empty).
        help: the flag's help text.
        flag: the option's name when it is not --field-name (OrtOptions.target: --ort-target).
        choices: the values it takes (a Click choice).
        multiple: the flag is repeatable; the field holds a tuple of what was given.
        metavar: how the help writes its value (RUNTIME==VERSION).
        keyword: its name as a keyword of `export()` and of the Click callback when that is not the
            flag's name with underscores (OnnxOptions.targets: --target, keyword targets).

    The field's type annotation gives the value's type: `bool` is an on/off flag, `int`, `str`.
    Keywords (and so flags) are unique across the registry: `tlexport.exporters.options` refuses
    two formats that claim one.
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices), "multiple": multiple, "metavar": metavar,
            "keyword": keyword}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)  # immutable defaults only: the class is frozen


def flag_of(f) -> str:
    """The field's command-line flag: its `flag`, else --field-name."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def keyword_of(f) -> str:
    """The field's keyword in `export()` and the Click callback: its `keyword`, else the flag's
    name with underscores (--ort-target: ort_target)."""
    return f.metadata.get("keyword") or flag_of(f)[2:].replace("-", "_")


def kind_of(f) -> str:
    """The value's type as the annotation spells it first: "bool", "int", "str", "tuple" (a
    string annotation, or the type itself when the module does not postpone annotations)."""
    kind = f.type.__name__ if isinstance(f.type, type) else str(f.type)
    return kind.split("|")[0].strip()


def option_fields(cls) -> tuple:
    """The fields of an options dataclass declared with `option()` (others are not options)."""
    return tuple(f for f in fields(cls) if "flag" in f.metadata)
