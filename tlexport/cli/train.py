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

    def files_checked(self, done, total):
        """The validity scan's bar (files decoded, files/s); refreshed here rather than by rich's
        thread, so that the scan can still fork its processes."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if done == 0:
            self.scan_bar = Progress(TextColumn("checking images"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.con,
                                     auto_refresh=False, disable=self.con.quiet)
            self.scan_task = self.scan_bar.add_task("scan", total=total, rate="")
            self.scan_bar.start()
        speed = self.scan_bar.tasks[0].speed
        self.scan_bar.update(self.scan_task, completed=done, rate=f"{speed:.0f} files/s" if speed else "")
        self.scan_bar.refresh()
        if done >= total:
            self.scan_bar.stop()

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


def run_training(fn, quiet, as_json, summary=True):
    """Run `fn(progress)` with a progress bar, then print its TrainResult (table or JSON; none
    without `summary`)."""
    from ..render import train_summary

    con = console(quiet or as_json)
    progress = RichTrainProgress(con)
    try:
        result = fn(progress)
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_dict())
    elif not quiet and summary:
        train_summary(con, result)
    return result


class ArchType(click.ParamType):
    """--arch: any name in the architecture registry (a bad name is Click's usual "Invalid value",
    with the closest names suggested)."""

    name = "arch"

    def convert(self, value, param, ctx):
        from ..errors import UsageError
        from ..tables import archs

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
@click.option("--linear-probe", is_flag=True, help="Train only the new head, every epoch (frozen backbone).")
@click.option("--cache-views", default=0, show_default=True, type=int,
              help="Head stage: augmented views cached per image (0: one view, eval preprocessing).")
@click.option("--feature-cache", default="auto", show_default=True, type=click.Choice(["auto", "memory", "disk", "off"]),
              help="Head stage (frozen backbone) trains on backbone features computed once per image, kept in "
                   "memory or in RUN/feature-cache (auto: disk above 2 GiB); off runs the frozen model every epoch.")
@click.option("--data-cache", default="disk", show_default=True, type=click.Choice(["disk", "memory", "off"]),
              help="Keep each training image decoded and shrunk to what the augmentation needs, so only the first "
                   "epoch decodes: disk (the user cache folder, shared by epochs, resumes, runs and ranks; "
                   "`tlexport cache` shows where and how big), memory (this run only) or off.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16"]),
              help="Autocast: auto = AMP on CUDA, bf16 on CPUs with AVX-512 BF16/AMX where a probe finds it faster.")
@click.option("--dist-timeout", default=900.0, show_default=True, type=float,
              help="Distributed: seconds a rank waits for the others before the job fails.")
@click.option("--nproc", type=int, help="Train data-parallel in N processes on this machine (torchrun's launcher).")
@error_boundary
def command(resume_dir, as_json, quiet, overwrite, nproc, **options):
    """Fine-tune a pretrained torchvision classifier on a folder of labelled images."""
    from ..training import distributed as D

    if resume_dir:
        check_resume_flags(options, overwrite)
    else:
        options = with_config_file(options)
        if not options["data"]:
            raise click.UsageError("--data DIR is required (or --resume RUN_DIR)")
    if nproc is not None and D.env_info().world_size == 1:
        launch_training(resume_dir, nproc, quiet, as_json, overwrite, options)
        return
    if D.env_info().world_size > 1:  # a worker of torchrun (or of --nproc): rank 0 alone speaks
        quiet, as_json = quiet or D.env_info().rank != 0, as_json and D.env_info().rank == 0
    result = as_worker(lambda: train_or_resume(resume_dir, quiet, as_json, overwrite, options))
    D.write_result(result.to_dict())
    D.cleanup()


# Where and how fast a resumed run goes may change; what it computes may not.
RESUME_OPTIONS = ("epochs", "device", "workers", "dist_timeout")


def check_resume_flags(options: dict, overwrite: bool) -> None:
    fixed = [name for name in options if name not in RESUME_OPTIONS and given(name)]
    if fixed or overwrite:
        flags = ", ".join("--" + n.replace("_", "-") for n in fixed + (["overwrite"] if overwrite else []))
        raise click.UsageError(f"{flags} cannot be given with --resume (the run keeps its stored options; "
                               "only --epochs, --device, --workers, --dist-timeout and --nproc can change)")


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


def train_or_resume(resume_dir, quiet, as_json, overwrite, options):
    from ..training import distributed as D
    from ..training.config import TrainConfig
    from ..training.loop import resume, train

    summary = not D.launched()  # under --nproc the launcher prints it
    if resume_dir:
        picked = {k: options[k] for k in RESUME_OPTIONS if given(k)}
        return run_training(lambda p: resume(resume_dir, progress=p, **picked), quiet, as_json, summary)
    cfg = TrainConfig(**options)
    return run_training(lambda p: train(cfg, progress=p, overwrite=overwrite), quiet, as_json, summary)


def as_worker(fn):
    """Run `fn`; in a worker of `--nproc` an error goes to torchelastic's error file for the
    launcher's one-line report (instead of one line from every rank)."""
    import sys

    from ..errors import TlexportError, first_line
    from ..training import distributed as D

    if not D.launched():
        return fn()
    try:
        return fn()
    except TlexportError as e:
        D.report_worker_error(str(e))
        sys.exit(e.exit_code)
    except Exception as e:
        D.report_worker_error(f"unexpected {type(e).__name__}: {first_line(e, 300)}")
        sys.exit(1)


def launch_training(resume_dir, nproc, quiet, as_json, overwrite, options):
    """`--nproc N`: check what can be checked here, start N workers with the same options (and
    one --out for all), then print the main worker's result or the failure in one line."""
    from pathlib import Path

    from ..errors import TlexportError
    from ..training import distributed as D
    from ..training.config import TrainConfig
    from ..training.loop import check_new_run_dir, default_run_dir

    if resume_dir:
        run_dir = Path(resume_dir).expanduser()
        args = forward_args(exclude={"nproc", "as_json", "quiet"})
    else:
        cfg = TrainConfig(**options)
        cfg.validate()
        run_dir = default_run_dir(cfg)
        check_new_run_dir(run_dir, overwrite)
        args = forward_args(exclude={"nproc", "as_json", "quiet", "out"}) + ["--out", str(run_dir)]
    args += ["--quiet"] if quiet or as_json else []
    try:
        result = D.launch(nproc, args)
    except TlexportError as e:
        if (run_dir / "checkpoint.pt").is_file():
            raise TlexportError(f"{e}; the job stopped. Its last finished epoch is saved: "
                                f"tlexport train --resume {run_dir} --nproc {nproc}") from None
        raise TlexportError(f"{e}; the job stopped") from None
    show_result(result, quiet, as_json)


def forward_args(exclude: set) -> list[str]:
    """The options the user typed, as command-line arguments again (for the workers)."""
    ctx = click.get_current_context()
    args = []
    for param in ctx.command.params:
        if param.name in exclude or not given(param.name):
            continue
        value = ctx.params[param.name]
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            args += [param.opts[0]] if value else []
        else:
            args += [param.opts[0], str(value)]
    return args


def show_result(result: dict, quiet: bool, as_json: bool) -> None:
    from pathlib import Path

    from ..render import train_summary
    from ..training.loop import EpochStats, TrainResult

    if as_json:
        emit_json(result)
    elif not quiet:
        train_summary(console(), TrainResult(
            run_dir=Path(result["run_dir"]), classes=result["classes"],
            best_val_accuracy=result["best_val_accuracy"], best_epoch=result["best_epoch"],
            epochs=result["epochs"], weights_file=Path(result["weights_file"]),
            weights_source=result["weights_source"], device=result["device"],
            history=[EpochStats(**h) for h in result["history"]], skipped=result["skipped_files"],
            notes=result.get("notes", []), stopped_epoch=result.get("stopped_epoch")))
