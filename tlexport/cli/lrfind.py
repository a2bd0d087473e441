"""`tlexport lr-find`: the LR range test for a training recipe, with a plot and a suggested LR."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from ..training.config import TrainConfig
from ..training.lrfind import Sweep
from .common import console, emit_json, error_boundary
from .train import with_config_file
from .trainopts import config_options


SWEPT = ("data", "arch", "weights", "batch_size", "accumulate", "optimizer", "momentum", "weight_decay",
         "label_smoothing", "image_size", "val_fraction", "seed", "device", "workers", "config_file")


@click.command("lr-find")
@config_options(TrainConfig, SWEPT, helps={
    "data": "Image folder, as for `tlexport train`.", "val_fraction": "Val share (kept out of the sweep).",
    "config_file": "The train YAML/JSON config: its recipe (mixup, class weights, ...) is swept; flags given win."})
@config_options(Sweep)
@click.option("--out", type=click.Path(), help="Folder for lr_find.png and lr_find.json (default: write nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@error_boundary
def command(start_lr, end_lr, steps, rule, out, as_json, quiet, **options):
    """Sweep the learning rate exponentially for a few hundred steps at most and suggest one.

    The model and optimiser are restored afterwards and no run folder is written."""
    from ..render import lr_find_summary, plot_lr_find, write_json_report
    from ..run import check_outside, made_dirs
    from ..training.lrfind import check_sweep, find_lr

    check_sweep(start_lr, end_lr, steps, rule)  # before the data is scanned and the model built
    options = with_config_file(options)
    if not options["data"]:
        raise click.UsageError("--data DIR is required")
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in names})
    cfg.validate()
    if out:
        check_outside(out, cfg.data, "the lr-find folder")
    con = console(quiet or as_json)
    con.print(f"sweeping lr {start_lr:g} .. {end_lr:g} over at most {steps} steps ...")
    result = find_lr(cfg, start_lr, end_lr, steps, rule)
    if out:
        with made_dirs(Path(out).expanduser()) as folder:  # nothing left behind if writing fails
            plot_lr_find(folder / "lr_find.png", result)
            write_json_report(folder / "lr_find.json", result)
        con.print(f"wrote {folder / 'lr_find.png'} and {folder / 'lr_find.json'}")
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        lr_find_summary(console(stderr=False), result)
