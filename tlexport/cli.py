"""The `tlexport` command line. Commands stay thin: parse options, call one library function,
render its result. Heavy imports happen inside commands so `tlexport --help` is instant."""

from __future__ import annotations

import functools
import json
import sys
import traceback

import click

from . import __version__
from .errors import TlexportError


class Context:
    def __init__(self, debug: bool):
        self.debug = debug


def error_boundary(fn):
    """Turn library errors into one line and an exit code; --debug re-raises with a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_object(Context).debug
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except TlexportError as e:
            if debug:
                traceback.print_exc()
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # a bug or an unforeseen environment problem: still one line
            if debug:
                traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0][:300]
            _fail(f"unexpected {type(e).__name__}: {first} (run with --debug for the traceback)", 1)

    return wrapper


def _fail(message: str, code: int):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tlexport")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Fine-tune a torchvision ResNet on your images and ship it: export to ONNX / TorchScript /
    .pt2 (fp32, fp16, int8), check parity between runtimes, benchmark, predict."""
    ctx.obj = Context(debug)


def main():
    cli(prog_name="tlexport")


# ---- commands ----------------------------------------------------------------------------------
# Each command lives below in its own block. Keep them thin.
