"""The `tlexport` command line: a Click group and one small module per command. Commands parse
options, call one library function and render its result with `tlexport.render`. Heavy imports
happen inside commands so `tlexport --help` is instant."""

from __future__ import annotations

import click

from .. import __version__
from .common import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tlexport")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors, and the warnings and "
              "logs of the libraries tlexport drives.")
@click.pass_context
def cli(ctx, debug):
    """Fine-tune a torchvision classifier on your images and ship it: export to ONNX / TorchScript /
    .pt2 / OpenVINO and the edge and serving formats (fp32, fp16, int8), check parity between
    runtimes, benchmark, predict."""
    ctx.obj = Context(debug)


def main():
    cli(prog_name="tlexport")


def _register() -> None:
    from . import archs, bench, cache, evaluate, export, lrfind, parity, predict, quickstart, train

    for module in (train, evaluate, export, predict, parity, bench, archs, quickstart, lrfind, cache):
        cli.add_command(module.command)


_register()
