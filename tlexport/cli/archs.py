"""`tlexport archs`: the architecture registry as a table (or JSON)."""

from __future__ import annotations

import click

from .common import console, emit_json, error_boundary, wide_option


@click.command("archs")
@click.option("--all", "show_all", is_flag=True, help="Every torchvision classifier, not only the tested ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@wide_option
@error_boundary
def command(show_all, as_json, wide):
    """Architectures --arch accepts: parameters, GFLOPs, default preprocessing, head, input sizes,
    and whether torchvision's ImageNet weights are already in the local cache (offline use)."""
    from ..render import archs_table
    from ..tables.archs import describe, registry

    rows = [describe(spec) for spec in registry().values() if show_all or spec.tested]
    if as_json:
        emit_json(rows)
        return
    archs_table(console(stderr=False), rows, wide)
