"""`tlexport export`'s format options, derived from the format registry: one Click option per
field of every registered format's options class (`FormatSpec.options`, fields declared with
`tlexport.formats.options.option`), with its flag, help, type, choices and default from the field.
A format that brings an option brings its flag: nothing here names a format.

The options are read from the registry whenever Click reads the command's parameters (help,
parsing, docs), not once at import, so a format registered at run time (as the tests register
throwaway ones) shows its flags too. The callback receives each value under the option's keyword
(`tlexport.formats.options.keyword_of`: `opset`, `targets`, `ort_target`), the keywords
`tlexport.exporters.options.ExportOptions.from_keywords` takes.
"""

from __future__ import annotations

import click

_TYPES = {"int": int, "str": str, "float": float}
_cache: dict[tuple, list[click.Option]] = {}


def click_option(f) -> click.Option:
    """The click.Option of one field of a format's options class."""
    from ..formats.options import flag_of, keyword_of, kind_of

    m, flag, name = f.metadata, flag_of(f), keyword_of(f)
    if kind_of(f) == "bool":
        return click.Option([flag, name], is_flag=True, default=bool(f.default), help=m["help"])
    if m["multiple"]:
        return click.Option([flag, name], multiple=True, metavar=m["metavar"], help=m["help"])
    ptype = click.Choice(list(m["choices"])) if m["choices"] else _TYPES.get(kind_of(f), str)
    shown = f.default not in (None, "", ())
    return click.Option([flag, name], type=ptype, default=f.default, show_default=shown, metavar=m["metavar"],
                        help=m["help"])


def format_params() -> list[click.Option]:
    """The Click options of every registered format's options fields, in registry and field order
    (the same objects while the registry is unchanged)."""
    from ..exporters.options import format_keywords, option_types
    from ..formats import registry
    from ..formats.options import option_fields

    key = tuple((name, spec.package, spec.options) for name, spec in registry.FORMATS.items())
    if key not in _cache:
        format_keywords()  # refuses two formats claiming one flag before Click sees them
        _cache[key] = [click_option(f) for cls in option_types().values() for f in option_fields(cls)]
    return _cache[key]


class FormatOptionsCommand(click.Command):
    """A command whose parameters are its own plus `format_params()`, placed after its option
    named `after` (export: after --out); refreshed from the registry each time Click asks for them
    (`get_params`), so `params` always holds the registered formats' options."""

    after = "out"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._own_params = list(self.params)
        self._refresh()

    def _refresh(self) -> None:
        own = self._own_params
        at = next((i + 1 for i, p in enumerate(own) if p.name == self.after), len(own))
        self.params[:] = [*own[:at], *format_params(), *own[at:]]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        self._refresh()
        return super().get_params(ctx)
