"""Click options derived from the fields of a config dataclass (TrainConfig, lr-find's Sweep):
name, type, default, choices and help come from the field, so `train`, `lr-find` and `eval`
offer one option with one default and one meaning. Ranges are checked by the config's own
validation (one line, exit 2), and shown in the help."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click


class ArchType(click.ParamType):
    """--arch: any name in the architecture registry (a bad name is Click's usual "Invalid value",
    with the closest names suggested)."""

    name = "arch"

    def convert(self, value, param, ctx):
        from ..errors import UsageError
        from ..tables import archs

        try:
            return archs.get(value).name
        except UsageError as e:
            self.fail(str(e), param, ctx)


class FiniteFloat(click.ParamType):
    """A float option of a config field: NaN and infinities are exit 2 while parsing, naming the
    option (click's FLOAT and FloatRange let NaN through). Ranges stay the config's check."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            option = param.opts[0] if param and param.opts else "the value"
            raise click.UsageError(f"{option} must be a finite number, got {value}", ctx)
        return number


_TYPES = {"int": int, "float": FiniteFloat(), "str": str}


def click_option(f, default=MISSING, help: str | None = None):
    """The click.option of one config field (`default`, `help`: a command's own, if it differs)."""
    from ..training.config import flag_of

    m = f.metadata
    value = f.default if default is MISSING else default
    value = None if value is MISSING else value
    text = m["help"] if help is None else help
    if m.get("range") is not None:
        text = f"{text} Must be {m['range'].words()}."
    kind = str(f.type).split("|")[0].strip()
    flag = flag_of(f)
    if kind == "bool":
        decls = [f"{flag}/--no-{flag[2:]}"] if value else [flag]
        return click.option(*decls, f.name, default=value, show_default=bool(value), is_flag=True, help=text)
    if m.get("choices"):
        ptype = click.Choice(list(m["choices"]))
    elif m.get("kind") == "path":
        ptype = click.Path()
    elif m.get("kind") == "arch":
        ptype = ArchType()
    else:
        ptype = _TYPES[kind]
    return click.option(flag, f.name, default=value, show_default=value is not None, type=ptype, help=text)


def config_options(cls, names=None, defaults: dict | None = None, helps: dict | None = None):
    """Decorator: one click.option per field of `cls` (all, or those in `names`), in field order."""
    chosen = [f for f in fields(cls) if names is None or f.name in names]
    defaults, helps = defaults or {}, helps or {}

    def decorate(fn):
        for f in reversed(chosen):
            fn = click_option(f, defaults.get(f.name, MISSING), helps.get(f.name))(fn)
        return fn

    return decorate
