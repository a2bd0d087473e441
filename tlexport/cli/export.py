"""`tlexport export`: a run's best weights -> verified artifacts + manifest.json. The choices and
their help are derived from the format registry, so a new format shows up here by itself, and so
do a format's own options (its options class's fields: `cli/formatopts.py`)."""

from __future__ import annotations

import click

from ..formats import registry
from ..formats.spec import CALIB_METHODS
from .common import console, emit_json, error_boundary, fail, list_option, wide_option
from .formatopts import FormatOptionsCommand


def _join(names) -> str:
    names = list(names)
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else "none"


def _format_help() -> str:
    extras = [f"{s.name} (.[{s.extra}])" for s in registry.FORMATS.values() if s.extra]
    return (f"{', '.join(registry.names())}; all (every format that can be exported here: those whose extra is "
            f"missing are listed as left out) or core (= {', '.join(registry.in_all())}, no extra needed); "
            f"repeatable or comma-separated. Needing their extra: {', '.join(extras)}; docs/formats.md lists what "
            "each makes.")


def _precision_help() -> str:
    def makers(p):
        return _join(s.name + (" (--device cuda)" if s.file(p).cuda_only else "")
                     for s in registry.FORMATS.values() if p in s.precisions)

    return f"fp32, fp16, int8; repeatable or comma-separated. int8: {makers('int8')}; fp16: {makers('fp16')}."


def _calib_help() -> str:
    defaults = {}
    for s in registry.FORMATS.values():
        if s.int8:
            defaults.setdefault(s.int8.default_method, []).append(s.name)
    fewer = _join(f"{s.name} ({'/'.join(s.int8.calib_methods) or 'none: no activation is calibrated'})"
                  for s in registry.FORMATS.values() if s.int8 and s.int8.calib_methods != CALIB_METHODS)
    return (f"int8 activation ranges: {', '.join(CALIB_METHODS)}. Default: each format's own "
            f"({'; '.join(f'{_join(n)}: {m}' for m, n in defaults.items())}), and under auto its other methods "
            f"when that misses the gate. Formats that honour fewer ({fewer}) fail their own int8 for the others; "
            "or give FORMAT=METHOD items: onnx=percentile,tflite=minmax.")


def _fallback_help() -> str:
    fixed = [s.name for s in registry.FORMATS.values() if s.int8 and not s.int8.per_layer]
    return ("int8 layers kept in float: auto (default for most architectures: every layer int8 when the held-out "
            "gate passes, else the fewest most sensitive layers in float until it does), none, or node names "
            "(stem and head name the first convolution and the classifier). "
            f"{_join(fixed)} cannot keep a layer in float: a node list is refused, auto is every layer int8.")


def _device_help() -> str:
    gpu_only = [f"{s.name} {f.precision}" for s in registry.FORMATS.values() for f in s.files if f.cuda_only]
    return f"cpu, or cuda for GPU-only variants ({_join(gpu_only)}) and verification on the GPU too."


def _command_help() -> str:
    return ("Export a run's best weights to the formats of --format (fp32, fp16, int8) with labels and "
            "preprocessing embedded, verified against PyTorch, plus manifest.json. Formats: "
            + "; ".join(f"{s.name}: {s.description}" for s in registry.FORMATS.values()) + ".\n\n"
            "Files are written to temporary names and moved into place only when all are complete and "
            "verified. TorchScript tracing is deprecated in PyTorch; .pt2 (torch.export) is its successor.")


@click.command("export", cls=FormatOptionsCommand, help=_command_help())
@click.argument("run_dir", type=click.Path())
@list_option("--format", "--formats", "formats", default=("onnx",), show_default=True, metavar="F[,F...]",
             help=_format_help())
@list_option("--precision", "--precisions", "precisions", default=("fp32",), show_default=True, metavar="P[,P...]",
             help=_precision_help())
@click.option("--out", type=click.Path(), help="Output folder (default RUN_DIR/export).")
# here: each registered format's own options (--opset, --target, --fp16-io, --bake-preprocess, --ort-target, ...),
# derived from its options class (cli/formatopts.py)
@click.option("--dynamic-size", is_flag=True,
              help="Leave the image's height and width free (and the batch): "
                   f"{', '.join(n for n, s in registry.FORMATS.items() if s.dynamic_size)}; verified at several sizes.")
@click.option("--batch", default="dynamic", show_default=True, help="'dynamic' (free batch dimension) or a fixed N.")
@click.option("--device", default="cpu", show_default=True, help=_device_help())
@click.option("--calib-size", default=256, show_default=True, type=int, help="int8 calibration images.")
@click.option("--calib-method", metavar="METHOD|FORMAT=METHOD,...", help=_calib_help())
@click.option("--calib-data", type=click.Path(), help="Calibrate on this image folder instead of the run's training split.")
@click.option("--int8-fallback", metavar="auto|none|NODE,...", help=_fallback_help())
@click.option("--replace", is_flag=True,
              help="Remove every tlexport file in the folder that this export does not make, and allow replacing an "
                   "export of other weights (each removal is listed). Default: an earlier export there is kept and "
                   "added to; a file made again replaces its earlier version, and the output says so.")
@click.option("--no-verify", is_flag=True, help="Keep artifacts even if they disagree with PyTorch.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifacts as JSON.")
@wide_option
@error_boundary
def command(run_dir, formats, precisions, out, no_verify, as_json, wide, **choices):
    """`choices`: the generic options (batch, device, calib_*, int8_fallback, dynamic_size, replace) and
    each format's own, by keyword: `ExportOptions.from_keywords` sorts them."""
    from ..exporters.pipeline import export, make_options
    from ..render import export_table
    from .status import StatusLine

    con = console(as_json)
    with StatusLine(con, disable=as_json, first="export: checking the options") as show:
        result = export(run_dir, formats, precisions, make_options(verify=not no_verify, **choices), out=out,
                        progress=show)
    if as_json:
        emit_json(result.to_dict())
    else:
        export_table(con, result, wide)
    if not result.passed:  # the failures were listed once, above (or in the JSON): not again here
        where = "in the JSON's \"failed\"" if as_json else "above"
        fail(f"{len(result.failed)} of {len(result.failed) + len(result.artifacts)} artifacts failed (listed "
             f"{where}); {len(result.artifacts)} published in {result.out_dir}", 1)
