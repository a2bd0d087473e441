"""`tlexport quickstart`: the whole pipeline, offline, on generated data."""

from __future__ import annotations

import click

from ..training.config import TrainConfig
from .common import console, error_boundary, fail
from .train import RichTrainProgress
from .trainopts import config_options


@click.command("quickstart")
@click.option("--out", default="tlexport-quickstart", show_default=True, type=click.Path(),
              help="Folder for the generated data, the run and its exports (must be empty).")
@config_options(TrainConfig, ("epochs",), defaults={"epochs": 12}, helps={"epochs": "Epochs to train."})
@error_boundary
def command(out, epochs):
    """Run the whole pipeline offline on a generated shapes dataset (resnet18, a few minutes)."""
    from .. import render
    from ..demo import quickstart

    from ..training.signals import TrainingInterrupted

    con = console()
    progress = RichTrainProgress(con)
    try:
        result = quickstart(out, epochs=epochs, progress=progress)
    except TrainingInterrupted as e:
        raise e.as_error() from None
    finally:
        progress.close()
    render.train_summary(con, result.train)
    con.print(f"eval: top-1 {result.eval.top1:.1%} on {result.eval.images} val images; "
              f"confusion matrix {result.eval.confusion_png}")
    steps = result.steps
    render.export_table(con, steps["export"])
    render.render_parity(steps["parity"], con)
    out_con = console(stderr=False)
    out_con.print(render.bench_table(steps["bench"], out_con.width), crop=False)
    render.predict_table(out_con, steps["predict"])
    export_dir = steps["export"].out_dir
    out_con.print(
        f"\n[bold green]done[/] - everything is in {result.out}:\n"
        f"  data     {result.data}\n"
        f"  run      {result.train.run_dir}  (best.safetensors, run.json, metrics.csv, curves.png, eval/)\n"
        f"  export   {export_dir}  (model.onnx, model.ts, model.int8.onnx, manifest.json)\n"
        f"next: tlexport predict {export_dir / 'model.onnx'} YOUR_IMAGES...   |   "
        f"python examples/edge_app.py {export_dir / 'model.onnx'} {result.data}"
    )
    if not steps["export"].passed:  # what passed was published and used above; exit 1 as export does
        fail(steps["export"].failure_line(), 1)
