"""`tlexport predict`: classify images with an exported model (onnxruntime only for ONNX)."""

from __future__ import annotations

import contextlib

import click

from . import policies as P
from .common import console, error_boundary, show_predictions
from .remote import on_option

BAR_FROM = 64  # images: fewer are done before a bar would be worth drawing


@click.command("predict")
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=5, show_default=True, type=P.Count(), help="Labels per image.")
@click.option("--batch-size", default=16, show_default=True, type=P.BATCH)
@click.option("--workers", type=P.Count(), help="Decoding threads (default: the CPUs, at most 8).")
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"image", "top": [{"label", "index", "prob"}]}] on stdout.')
@on_option()
@error_boundary
def command(model, images, top_k, batch_size, workers, as_json, on):
    """Classify IMAGES (files or folders) with an exported MODEL.

    MODEL is a .onnx file (runs on onnxruntime without importing torch), an export folder (its
    model.onnx, else model.int8.onnx, else model.fp16.onnx), or an artifact of any other exported
    format (docs/formats.md lists them). Loading TorchScript or .pt2 runs code from the file, so
    those are only loaded when named explicitly: use only files you trust.

    Images are decoded in parallel while the model runs, results are listed in file order; on a
    terminal a progress bar (stderr) shows long folders going.

    With --on TARGET the images are shipped to that device and decoded there; an export folder
    then runs the fastest file verified on that device (docs/devices.md).

    Exit status: 0 when every image was classified; 1 when some could not be read (they are
    reported by name on stderr, the others are still printed); 2 for bad usage.
    """
    if on:  # --on TARGET: decoded and classified on that device (tlexport.remote)
        from . import remote

        remote.refuse_with_on(workers=workers)
        return remote.predict(on, model, images, top_k=top_k, batch_size=batch_size, as_json=as_json)
    from ..inference import predict

    with _bar(console()) as progress:
        result = predict(model, list(images), top_k=top_k, batch_size=batch_size, workers=workers,
                         progress=progress)
    show_predictions(result, as_json)


@contextlib.contextmanager
def _bar(con):
    """A progress callback drawing a transient bar on a terminal once a folder is long enough."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not con.is_terminal:
        yield None
        return
    bar = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=con, transient=True)
    task = None

    def progress(done, total):
        nonlocal task
        if total < BAR_FROM:
            return
        if task is None:
            bar.start()
            task = bar.add_task("predict", total=total, rate="")
        speed = bar.tasks[0].speed
        bar.update(task, completed=done, rate=f"{speed:.1f} img/s" if speed else "")

    try:
        yield progress
    finally:
        bar.stop()
