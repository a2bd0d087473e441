"""`tlexport train`: fine-tune a registered architecture on a folder of labelled images."""

from __future__ import annotations

import click

from .common import console, emit_json, error_boundary, given


class RichTrainProgress:
    """Progress bar per epoch (loss, accuracy, images/s) for tlexport.training.loop.Progress."""

    def __init__(self, con):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.con = con
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.1%} {task.fields[rate]:.1f} img/s"),
            TimeRemainingColumn(), console=con, transient=False, disable=con.quiet,
        )
        self.task = None
        self.started = False

    def message(self, text):
        self.con.print(text)

    def start_epoch(self, epoch, epochs, steps, phase):
        if not self.started:
            self.bar.start()
            self.started = True
        label = f"epoch {epoch}/{epochs}" + (" (head only)" if phase == "head" else "")
        self.task = self.bar.add_task(label, total=steps, loss=0.0, acc=0.0, rate=0.0)

    def step(self, images, loss, acc, images_per_s):
        self.bar.update(self.task, advance=1, loss=loss, acc=acc, rate=images_per_s)

    def end_epoch(self, stats):
        self.bar.update(self.task, description=f"epoch {stats.epoch} val acc {stats.val_acc:.1%}")

    def close(self):
        if self.started:
            self.bar.stop()


def run_training(fn, quiet, as_json):
    """Run `fn(progress)` with a progress bar, then print its TrainResult (table or JSON)."""
    from ..render import train_summary

    con = console(quiet or as_json)
    progress = RichTrainProgress(con)
    try:
        result = fn(progress)
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        train_summary(con, result)
    return result


class ArchType(click.ParamType):
    """--arch: any name in the architecture registry (a bad name is Click's usual "Invalid value",
    with the closest names suggested)."""

    name = "arch"

    def convert(self, value, param, ctx):
        from ..errors import UsageError
        from ..spec import archs

        try:
            return archs.get(value).name
        except UsageError as e:
            self.fail(str(e), param, ctx)


@click.command("train")
@click.option("--data", type=click.Path(), help="Image folder: <class>/* or train/<class>/* + val/<class>/*.")
@click.option("--arch", default="resnet50", show_default=True, type=ArchType(),
              help="Any torchvision classifier (`tlexport archs` lists them): resnet18..152, mobilenet_v3_small, "
                   "efficientnet_b0, regnet_x_400mf, convnext_tiny, vit_b_16, swin_t, ...")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (torchvision's, via its cache), none (from scratch), or a .safetensors/.pt/.pth path.")
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adamw"]))
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--momentum", default=0.9, show_default=True, type=float)
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--label-smoothing", default=0.0, show_default=True, type=float)
@click.option("--scheduler", default="cosine", show_default=True, type=click.Choice(["cosine", "step"]))
@click.option("--warmup-epochs", default=0.0, show_default=True, type=float, help="Linear LR warm-up length.")
@click.option("--step-size", default=0, type=int, help="Epochs per LR step for --scheduler step (default: a third of the run).")
@click.option("--freeze-epochs", default=0, show_default=True, type=int, help="Train only the new head for N epochs first.")
@click.option("--backbone-lr-mult", default=0.1, show_default=True, type=float, help="Backbone LR = lr x this, once unfrozen.")
@click.option("--augment/--no-augment", default=True, show_default=True, help="RandomResizedCrop + horizontal flip.")
@click.option("--crop-scale", default=0.08, show_default=True, type=float,
              help="Smallest image area fraction a random crop keeps (raise it when objects are small).")
@click.option("--val-fraction", default=0.2, show_default=True, type=float, help="Val share when DATA has no val/ folder.")
@click.option("--image-size", type=int, help="Crop size fed to the network (default: the weights' own, e.g. 224).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=int, help="Data loader processes (default: by device and cores).")
@click.option("--max-steps", type=int, help="Cap on steps per epoch (smoke tests).")
@click.option("--out", type=click.Path(), help="Run directory (default runs/<arch>-<time>).")
@click.option("--name", help="Run name under runs/ when --out is not given.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue RUN_DIR from its checkpoint with its stored options.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out (its run files are removed).")
@click.option("--ema", default=0.0, show_default=True, type=float,
              help="Keep an EMA of the weights with this decay per step (e.g. 0.9998); it is validated and saved. 0 = off.")
@click.option("--mixup", default=0.0, show_default=True, type=float, help="MixUp Beta(alpha, alpha) per batch; 0 = off.")
@click.option("--cutmix", default=0.0, show_default=True, type=float, help="CutMix Beta(alpha, alpha) per batch; 0 = off.")
@click.option("--mixup-prob", default=1.0, show_default=True, type=float, help="Chance a batch is mixed at all.")
@click.option("--mixup-switch-prob", default=0.5, show_default=True, type=float,
              help="Chance of CutMix instead of MixUp when both are on.")
@click.option("--auto-augment", default="none", show_default=True, type=click.Choice(["rand", "trivial", "none"]),
              help="RandAugment or TrivialAugmentWide after the random crop and flip.")
@click.option("--patience", default=0, show_default=True, type=int,
              help="Stop when val accuracy has not improved for N epochs; 0 = off.")
@click.option("--class-weights", default="none", show_default=True, type=click.Choice(["auto", "none"]),
              help="auto: inverse-frequency class weights in the loss (imbalanced data).")
@click.option("--balanced-sampler", is_flag=True, help="Draw every class equally often (seeded, with replacement).")
@click.option("--config", "config_file", type=click.Path(),
              help="YAML or JSON file of train options (keys as the flags: batch_size or batch-size); flags given win.")
@error_boundary
def command(resume_dir, as_json, quiet, overwrite, **options):
    """Fine-tune a pretrained torchvision classifier on a folder of labelled images."""
    from ..training.config import TrainConfig
    from ..training.loop import resume, train

    if resume_dir:
        # Where and how fast it runs may change on resume; what it computes may not.
        fixed = [name for name in options if name not in RESUME_OPTIONS and given(name)]
        if fixed or overwrite:
            flags = ", ".join("--" + n.replace("_", "-") for n in fixed + (["overwrite"] if overwrite else []))
            raise click.UsageError(f"{flags} cannot be given with --resume (the run keeps its stored options; "
                                   "only --epochs, --device and --workers can change)")
        picked = {k: options[k] for k in RESUME_OPTIONS if given(k)}
        run_training(lambda p: resume(resume_dir, progress=p, **picked), quiet, as_json)
        return
    options = with_config_file(options)
    if not options["data"]:
        raise click.UsageError("--data DIR is required (or --resume RUN_DIR)")
    cfg = TrainConfig(**options)
    run_training(lambda p: train(cfg, progress=p, overwrite=overwrite), quiet, as_json)


RESUME_OPTIONS = ("epochs", "device", "workers")


def with_config_file(options: dict) -> dict:
    """`options` with the --config file's values for every option not typed on the command line
    (flags given win over the file; the file wins over defaults). File keys are TrainConfig
    fields; a command with fewer flags (lr-find) still gets the file's other options."""
    from ..training.config import load_config_file

    path = options.get("config_file")
    if not path:
        return options
    values = load_config_file(path)
    return {**options, **{k: v for k, v in values.items() if not (k in options and given(k))}}
