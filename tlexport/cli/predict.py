"""`tlexport predict`: classify images with an exported model (onnxruntime only for ONNX)."""

from __future__ import annotations

import sys

import click

from . import policies as P
from .common import console, emit_json, error_boundary


@click.command("predict")
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=5, show_default=True, type=P.Count(), help="Labels per image.")
@click.option("--batch-size", default=16, show_default=True, type=P.BATCH)
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"image", "top": [{"label", "index", "prob"}]}] on stdout.')
@error_boundary
def command(model, images, top_k, batch_size, as_json):
    """Classify IMAGES (files or folders) with an exported MODEL.

    MODEL is a .onnx file (runs on onnxruntime without importing torch), an export folder (its
    model.onnx, else model.int8.onnx, else model.fp16.onnx), or an artifact of any other exported
    format (docs/formats.md lists them). Loading TorchScript or .pt2 runs code from the file, so
    those are only loaded when named explicitly: use only files you trust.

    Exit status: 0 when every image was classified; 1 when some could not be read (they are
    reported by name on stderr, the others are still printed); 2 for bad usage.
    """
    from ..inference import predict
    from ..render import predict_table

    result = predict(model, list(images), top_k=top_k, batch_size=batch_size)
    if as_json:
        emit_json(result.results)
    else:
        predict_table(console(stderr=False), result)
    err = console()
    for e in result.errors:
        err.print(f"cannot read {e['image']}: {e['error']}", style="red", markup=False, highlight=False)
    if result.errors:
        sys.exit(1)
