"""`tlexport cache`: where tlexport keeps what it can recompute, how big it is, and clearing it."""

from __future__ import annotations

import click

from .common import console, emit_json, error_boundary


@click.command("cache")
@click.option("--clear", is_flag=True, help="Remove the cached training images, the remembered scans and the "
              "traced ONNX graphs (only folders carrying tlexport's CACHEDIR.TAG marker).")
@click.option("--json", "as_json", is_flag=True, help='Print {"directory", "image_entries", "image_bytes", ...}.')
@error_boundary
def command(clear, as_json):
    """Show tlexport's cache folder: training images kept decoded and shrunk (`train --data-cache
    disk`), the remembered validity scans and the traced ONNX graphs (a second export of the same
    weights skips the trace). Everything in it can be recomputed; it lives in
    $TLEXPORT_CACHE_DIR, else $XDG_CACHE_HOME/tlexport, else ~/.cache/tlexport."""
    from ..data.cache import MARKER, cache_info, clear_cache

    info = clear_cache() if clear else cache_info()
    if as_json:
        emit_json({**info.to_dict(), "cleared": clear})
        return
    con = console(stderr=False)
    verb = "removed" if clear else "holds"
    con.print(f"{info.directory} {verb}:", markup=False, highlight=False)
    for n, what, size in ((info.image_entries, "cached training images", info.image_bytes),
                          (info.scan_files, "remembered scans", info.scan_bytes),
                          (info.graph_files, "traced ONNX graphs", info.graph_bytes)):
        con.print(f"  {n} {what} ({size / 2**20:.1f} MiB)", markup=False, highlight=False)
    for folder in info.kept:
        con.print(f"left {folder} alone: it has no {MARKER}, so tlexport did not make it", markup=False,
                  highlight=False)
