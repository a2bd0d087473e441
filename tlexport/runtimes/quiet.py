"""The runtimes' and converters' way to `tlexport.quiet` (kept so their imports stay short and
stable): `silenced()` around a noisy call, `captured(e)` for what a failed one wrote."""

from ..quiet import captured, silenced  # noqa: F401
