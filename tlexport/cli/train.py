"""`tlexport train`: fine-tune a registered architecture on a folder of labelled images."""

from __future__ import annotations

from dataclasses import fields

import click

from ..training.config import RESUMABLE, TrainConfig, check_value, flag_of
from .common import console, emit_json, error_boundary, given
from .trainopts import config_options


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
    without `summary`). A run stopped by Ctrl-C or SIGTERM becomes its one-line error with its
    own exit code (130 / 143) and the way to resume."""
    from ..render import train_summary
    from ..training.signals import TrainingInterrupted

    con = console(quiet or as_json)
    progress = RichTrainProgress(con)
    try:
        result = fn(progress)
    except TrainingInterrupted as e:
        raise e.as_error() from None
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_dict())
    elif not quiet and summary:
        train_summary(con, result)
    return result


@click.command("train")
@config_options(TrainConfig)
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue RUN_DIR from its checkpoint with its stored options.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out (its run files are removed).")
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


def check_resume_flags(options: dict, overwrite: bool) -> None:
    """With --resume only the resumable options (where and how fast the run goes, never what it
    computes) may be given."""
    flag = {f.name: flag_of(f) for f in fields(TrainConfig)}
    fixed = [flag[name] for name in options if name not in RESUMABLE and given(name)]
    if fixed or overwrite:
        flags = ", ".join(fixed + (["--overwrite"] if overwrite else []))
        allowed = ", ".join(flag[n] for n in RESUMABLE)
        raise click.UsageError(f"{flags} cannot be given with --resume (the run keeps its stored options; "
                               f"only {allowed} and --nproc can change)")


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
    from ..training.loop import resume, train

    summary = not D.launched()  # under --nproc the launcher prints it
    if resume_dir:
        picked = {k: options[k] for k in RESUMABLE if given(k)}
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
    from ..run import RunDir
    from ..training import distributed as D
    from ..training.loop import check_new_run, default_run_dir

    if resume_dir:
        for name in RESUMABLE:  # here, not in N workers
            if given(name):
                check_value(TrainConfig, name, options[name])
        folder = RunDir(resume_dir)
        with folder.writing(create=False):  # a live or missing run is told here, in one line
            folder.require()
        args = forward_args(exclude={"nproc", "as_json", "quiet"})
    else:
        cfg = TrainConfig(**options)
        cfg.validate()
        folder = RunDir(default_run_dir(cfg))
        check_new_run(cfg, folder.path, overwrite)
        args = forward_args(exclude={"nproc", "as_json", "quiet", "out"}) + ["--out", str(folder)]
    args += ["--quiet"] if quiet or as_json else []
    try:
        result = D.launch(nproc, args)
    except (D.WorkerFailed, D.LauncherStopped) as e:  # keeps its exit code (1 or 2; 130/143 when stopped)
        saved = f". Its last finished epoch is saved: tlexport train --resume {folder} --nproc {nproc}"
        e.args = (f"{e}; the job stopped" + (saved if folder.has_checkpoint() else ""),)
        raise
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
    from ..render import train_summary
    from ..training.history import TrainResult

    if as_json:
        emit_json(result)
    elif not quiet:
        train_summary(console(), TrainResult.from_dict(result))
