"""`tlexport lr-find`: the LR range test for a training recipe, with a plot and a suggested LR."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from .common import console, emit_json, error_boundary
from .train import ArchType, with_config_file


@click.command("lr-find")
@click.option("--data", type=click.Path(), help="Image folder, as for `tlexport train`.")
@click.option("--arch", default="resnet50", show_default=True, type=ArchType())
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, none, or a weights file.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adamw"]))
@click.option("--momentum", default=0.9, show_default=True, type=float)
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--label-smoothing", default=0.0, show_default=True, type=float)
@click.option("--image-size", type=int, help="Crop size fed to the network (default: the weights' own).")
@click.option("--val-fraction", default=0.2, show_default=True, type=float, help="Val share (kept out of the sweep).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", type=int, help="Data loader processes (default: by device and cores).")
@click.option("--config", "config_file", type=click.Path(),
              help="The train YAML/JSON config: its recipe (mixup, class weights, ...) is swept; flags given win.")
@click.option("--start-lr", default=1e-7, show_default=True, type=float)
@click.option("--end-lr", default=10.0, show_default=True, type=float)
@click.option("--steps", default=100, show_default=True, type=int, help="Sweep length (at most 300; stops on divergence).")
@click.option("--rule", default="min10", show_default=True, type=click.Choice(["min10", "steepest"]),
              help="min10: lowest-loss LR / 10; steepest: fastest-falling loss. Both are reported.")
@click.option("--out", type=click.Path(), help="Folder for lr_find.png and lr_find.json (default: write nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@error_boundary
def command(start_lr, end_lr, steps, rule, out, as_json, quiet, **options):
    """Sweep the learning rate exponentially for a few hundred steps at most and suggest one.

    The model and optimiser are restored afterwards and no run folder is written."""
    from ..render import lr_find_summary, plot_lr_find, write_json_report
    from ..training.config import TrainConfig
    from ..training.lrfind import check_sweep, find_lr

    check_sweep(start_lr, end_lr, steps, rule)  # before the data is scanned and the model built
    options = with_config_file(options)
    if not options["data"]:
        raise click.UsageError("--data DIR is required")
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in names})
    con = console(quiet or as_json)
    con.print(f"sweeping lr {start_lr:g} .. {end_lr:g} over at most {steps} steps ...")
    result = find_lr(cfg, start_lr, end_lr, steps, rule)
    if out:
        folder = Path(out).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        plot_lr_find(folder / "lr_find.png", result)
        write_json_report(folder / "lr_find.json", result)
        con.print(f"wrote {folder / 'lr_find.png'} and {folder / 'lr_find.json'}")
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        lr_find_summary(console(stderr=False), result)
