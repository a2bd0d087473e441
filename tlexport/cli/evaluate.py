"""`tlexport eval`: accuracy, per-class metrics and the confusion matrix of a run."""

from __future__ import annotations

import click

from ..run.layout import WEIGHTS
from ..training.config import TrainConfig
from .common import console, emit_json, error_boundary
from .trainopts import config_options


@click.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Labelled folder (<class>/*); default the run's val split.")
@click.option("--weights", "which", default="best", show_default=True, type=click.Choice(list(WEIGHTS)),
              help="The best epoch's weights or the last one's.")
@config_options(TrainConfig, ("batch_size", "device"), helps={"batch_size": "Images per forward pass."})
@click.option("--out", type=click.Path(), help="Folder for confusion.png and eval.json (default RUN_DIR/eval).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@error_boundary
def command(run_dir, data, which, batch_size, device, out, as_json):
    """Top-1/top-5 accuracy, per-class precision/recall/F1 and the confusion matrix of a run."""
    from ..render import eval_summary
    from ..training.evaluate import evaluate
    from .status import StatusLine

    with StatusLine(console(as_json), disable=as_json, first="eval: loading the run",
                    ticking=False) as show:  # the image check forks its workers
        result = evaluate(run_dir, data, batch_size, device, which, out, progress=show)
    if as_json:
        emit_json(result.to_dict())
        return
    eval_summary(console(), result)
