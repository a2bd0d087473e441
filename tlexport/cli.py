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


class _RichTrainProgress:
    """Progress bar per epoch (loss, accuracy, images/s) for tlexport.train.Progress."""

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


def _train_summary(con, result):
    from rich.table import Table

    table = Table(title=f"run {result.run_dir}")
    for col in ("epoch", "phase", "train loss", "train acc", "val loss", "val acc", "img/s", "s"):
        table.add_column(col, justify="right")
    for h in result.history:
        best = " *" if h.epoch == result.best_epoch else ""
        table.add_row(str(h.epoch), h.phase, f"{h.train_loss:.4f}", f"{h.train_acc:.1%}", f"{h.val_loss:.4f}",
                      f"{h.val_acc:.1%}{best}", f"{h.images_per_s:.1f}", f"{h.seconds:.1f}")
    con.print(table)
    con.print(f"best val accuracy {result.best_val_accuracy:.1%} (epoch {result.best_epoch}); "
              f"weights: {result.weights_file}")


def _run_training(fn, quiet, as_json):
    con = console(quiet or as_json)
    progress = _RichTrainProgress(con)
    try:
        result = fn(progress)
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        _train_summary(con, result)
    return result


@cli.command()
@click.option("--data", type=click.Path(), help="Image folder: <class>/* or train/<class>/* + val/<class>/*.")
@click.option("--arch", default="resnet50", show_default=True,
              type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]))
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
@click.option("--image-size", type=int, help="Crop size fed to the network (default: the weights' own, 224).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=int, help="Data loader processes (default: by device and cores).")
@click.option("--max-steps", type=int, help="Cap on steps per epoch (smoke tests).")
@click.option("--out", type=click.Path(), help="Run directory (default runs/<arch>-<time>).")
@click.option("--name", help="Run name under runs/ when --out is not given.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue RUN_DIR from its checkpoint with its stored options.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@error_boundary
def train(resume_dir, as_json, quiet, **options):
    """Fine-tune a pretrained ResNet on a folder of labelled images."""
    from .train import TrainConfig, resume
    from .train import train as run_train

    if resume_dir:
        epochs = options["epochs"] if _given("epochs") else None
        _run_training(lambda p: resume(resume_dir, epochs=epochs, progress=p), quiet, as_json)
        return
    if not options["data"]:
        raise click.UsageError("--data DIR is required (or --resume RUN_DIR)")
    cfg = TrainConfig(**options)
    _run_training(lambda p: run_train(cfg, progress=p), quiet, as_json)


def _given(param: str) -> bool:
    source = click.get_current_context().get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Labelled folder (<class>/*); default the run's val split.")
@click.option("--weights", "which", default="best", show_default=True, type=click.Choice(["best", "last"]))
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(), help="Folder for confusion.png and eval.json (default RUN_DIR/eval).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@error_boundary
def eval_cmd(run_dir, data, which, batch_size, device, out, as_json):
    """Top-1/top-5 accuracy, per-class precision/recall/F1 and the confusion matrix of a run."""
    from rich.table import Table

    from .evaluate import evaluate

    result = evaluate(run_dir, data, batch_size, device, which, out)
    if as_json:
        emit_json(result.to_dict())
        return
    con = console()
    con.print(f"{result.images} images ({result.data}): top-1 [bold]{result.top1:.1%}[/], top-5 {result.top5:.1%}")
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for row in result.per_class:
        table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    con.print(table)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for c in result.classes:
        cm.add_column(c[:10], justify="right")
    for c, row in zip(result.classes, result.confusion):
        cm.add_row(c, *[str(v) for v in row])
    con.print(cm)
    if result.skipped:
        con.print(f"[yellow]skipped {len(result.skipped)} unreadable image(s)[/]")
    con.print(f"confusion matrix image: {result.confusion_png}")


# ---- parity ------------------------------------------------------------------------------------
def _csv(value, cast=str, what="value"):
    """'a,b , c' -> [cast(a), cast(b), cast(c)]; None -> None. Bad items -> click.BadParameter."""
    if not value:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list of {what}, got {value!r}") from None


@cli.command()
@click.argument("export_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Image folder; <class>/* sub-folders named like the run's classes give labels (default: the run's val split).")
@click.option("--random", "random_n", type=int, help="Compare on N seeded random-normal inputs instead of images.")
@click.option("--reference", default="torch-eager", show_default=True, help="Reference runtime, or name/precision/device.")
@click.option("--runtimes", help="Comma-separated runtimes to compare (default: all the export allows).")
@click.option("--device", "devices", default="cpu", show_default=True, help="Comma-separated devices: cpu,cuda.")
@click.option("--precisions", help="Comma-separated precisions to compare: fp32,fp16,int8 (default: all exported).")
@click.option("--atol", default=1e-4, show_default=True, type=float, help="fp32 absolute tolerance on logits.")
@click.option("--rtol", default=1e-3, show_default=True, type=float, help="fp32 relative tolerance on logits.")
@click.option("--max-images", type=int, help="Use at most N images (spread over the list).")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--run-dir", type=click.Path(), help="The training run (default: from manifest.json / the parent folder).")
@click.option("--json", "json_file", type=click.Path(), help="Write the full report as JSON to FILE.")
@click.option("--markdown", "md_file", type=click.Path(), help="Write the table as Markdown to FILE.")
@click.option("--quiet", is_flag=True, help="Only the final PASS/FAIL line.")
@error_boundary
def parity(export_dir, data, random_n, reference, runtimes, devices, precisions, atol, rtol, max_images,
           batch_size, run_dir, json_file, md_file, quiet):
    """Check that every exported artifact and runtime agrees with PyTorch, image by image.

    Exit 0 when every compared runtime passes its gates, 1 when any fails, 2 for bad usage.
    Gates: fp32 within --atol/--rtol and 100% top-1 agreement; fp16 finite and >= 99% top-1;
    int8 >= 98% top-1 and <= 1 point accuracy drop when labels are known.
    """
    from . import report as rep
    from .parity import parity as run_parity

    con = console()
    if not con.is_terminal:  # a CI log or CliRunner: do not squash the 14 columns into 80
        con.width = max(con.width, 180)
    with _parity_progress(con, quiet) as progress:
        result = run_parity(export_dir, data=data, random=random_n, reference=reference,
                            runtimes=_csv(runtimes), devices=tuple(_csv(devices) or ()),
                            precisions=_csv(precisions), atol=atol,
                            rtol=rtol, max_images=max_images, batch_size=batch_size, run_dir=run_dir,
                            progress=progress)
    if json_file:
        rep.write_json_report(json_file, result)
    if md_file:
        rep.write_text_report(md_file, rep.parity_markdown(result))
    if quiet:
        click.echo("PASS" if result.passed else "FAIL")
    else:
        rep.render_parity(result, con)
    if not result.passed:
        sys.exit(1)


class _parity_progress:
    """A rich progress bar with one task per runtime, fed by parity's progress(label, done, total)."""

    def __init__(self, con, quiet):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            console=con, transient=True, disable=quiet or not con.is_terminal)
        self.tasks = {}

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, label, done, total):
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(label, total=total)
        self.bar.update(self.tasks[label], completed=done)


# ---- bench (engineer C) -------------------------------------------------------------------------
@cli.command("bench")
@click.argument("export_dir", type=click.Path())
@click.option("--runtimes", "runtimes_", metavar="R,...", help="Runtimes to measure (default: all available; "
              "torch-eager fp32 is always measured as the baseline).")
@click.option("--precisions", metavar="P,...", help="fp32,fp16,int8 (default: all exported).")
@click.option("--device", "devices", default="cpu", show_default=True, metavar="D,...", help="cpu,cuda")
@click.option("--batch-sizes", default="1", show_default=True, metavar="B,...", help="e.g. 1,8,32")
@click.option("--warmup", default=10, show_default=True, type=int, help="Untimed calls per cell.")
@click.option("--iters", type=int, help="Timed calls per cell (default: a 2 s budget, at least 10 calls).")
@click.option("--duration", type=float, help="Seconds of timed calls per cell (instead of --iters).")
@click.option("--threads", type=int, help="Intra-op threads for every runtime (default: library default).")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Run directory for torch-eager (default: the one recorded by the export).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--markdown", "md_file", type=click.Path(dir_okay=False), help="Write the report as Markdown.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Write latency/throughput vs batch size (PNG).")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@error_boundary
def bench_cmd(export_dir, runtimes_, precisions, devices, batch_sizes, warmup, iters, duration, threads,
              run_dir, json_file, md_file, plot_file, quiet):
    """Latency (p50/p90/p99, mean, std, min) and throughput of every exported artifact, per runtime,
    precision, device and batch size, with the speed-up over PyTorch eager fp32 measured in the
    same run. Loads TorchScript/.pt2 files from EXPORT_DIR: only bench folders you trust."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .bench import bench, rich_table
    from .errors import UsageError
    from .fileio import write_json, write_text

    if iters is not None and duration is not None:
        raise UsageError("give either --iters or --duration, not both")
    con = console(quiet)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=con,
                  transient=True, disable=quiet) as bar:
        task = bar.add_task("bench", total=None)
        report = bench(
            export_dir, runtimes=_csv(runtimes_, what="runtime names"), precisions=_csv(precisions, what="precisions"),
            devices=tuple(_csv(devices, what="devices") or ()), batch_sizes=_csv(batch_sizes, int, "integers"),
            warmup=warmup, iters=iters, duration=duration, threads=threads, run_dir=run_dir,
            progress=lambda label, done, total: bar.update(task, description=label, completed=done, total=total),
        )
    if not quiet:
        Console(highlight=False).print(rich_table(report))
        for s in report.skipped:
            con.print(f"skipped {s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}")
    if json_file:
        write_json(json_file, report.to_dict())
    if md_file:
        write_text(md_file, report.to_markdown())
    if plot_file:
        from .plots import latency_vs_batch

        latency_vs_batch(report, plot_file)
    failed = [r for r in report.results if r.error]
    for r in failed:
        con.print(f"{r.label} batch {r.batch_size} failed: {r.error}", style="red", markup=False, highlight=False)
    if failed and len(failed) == len(report.results):
        from .errors import TlexportError

        raise TlexportError("every runtime failed; see the messages above")


@cli.command()
@click.option("--out", default="tlexport-quickstart", show_default=True, type=click.Path(),
              help="Folder for the generated data, the run and its exports (must be empty).")
@click.option("--epochs", default=12, show_default=True, type=int)
@error_boundary
def quickstart(out, epochs):
    """Run the whole pipeline offline on a generated shapes dataset (resnet18, a few minutes)."""
    from .quickstart import quickstart as run_quickstart

    con = console()
    progress = _RichTrainProgress(con)
    try:
        result = run_quickstart(out, epochs=epochs, progress=progress)
    finally:
        progress.close()
    _train_summary(con, result.train)
    con.print(f"eval: top-1 {result.eval.top1:.1%} on {result.eval.images} val images; "
              f"confusion matrix {result.eval.confusion_png}")
    _quickstart_stages(con, result)


def _quickstart_stages(con, result):
    from rich.console import Console

    from . import report as rep
    from .bench import rich_table

    steps = result.steps
    _export_table(con, steps["export"])
    rep.render_parity(steps["parity"], con)
    con.print(rich_table(steps["bench"]))
    _predict_table(steps["predict"])
    export_dir = steps["export"].out_dir
    Console(highlight=False).print(
        f"\n[bold green]done[/] - everything is in {result.out}:\n"
        f"  data     {result.data}\n"
        f"  run      {result.train.run_dir}  (best.safetensors, run.json, metrics.csv, curves.png, eval/)\n"
        f"  export   {export_dir}  (model.onnx, model.ts, model.int8.onnx, manifest.json)\n"
        f"next: tlexport predict {export_dir / 'model.onnx'} YOUR_IMAGES...   |   "
        f"python examples/edge_app.py {export_dir / 'model.onnx'} {result.data}"
    )


# ---- export (engineer A) -----------------------------------------------------------------------
@cli.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "formats", multiple=True, default=("onnx",), show_default=True,
              type=click.Choice(["onnx", "torchscript", "pt2", "all"]), help="Repeatable.")
@click.option("--precision", "precisions", multiple=True, default=("fp32",), show_default=True,
              type=click.Choice(["fp32", "fp16", "int8"]),
              help="Repeatable. int8: ONNX only; fp16 TorchScript: --device cuda only.")
@click.option("--out", type=click.Path(), help="Output folder (default RUN_DIR/export).")
@click.option("--opset", type=int, help="ONNX opset (default: newest supported by both the exporter and onnxruntime).")
@click.option("--batch", default="dynamic", show_default=True, help="'dynamic' (free batch dimension) or a fixed N.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]), help="Tracing device.")
@click.option("--calib-size", default=256, show_default=True, type=int, help="int8 calibration images.")
@click.option("--calib-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "percentile", "entropy"]))
@click.option("--calib-data", type=click.Path(), help="Calibrate on this image folder instead of the run's training split.")
@click.option("--fp16-io", is_flag=True, help="fp16 ONNX takes and returns float16 (default float32 I/O).")
@click.option("--bake-preprocess", is_flag=True,
              help="Also write model.uint8.onnx: uint8 NHWC RGB crop in, normalisation inside the graph.")
@click.option("--no-verify", is_flag=True, help="Keep artifacts even if they disagree with PyTorch.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifacts as JSON.")
@error_boundary
def export_cmd(run_dir, formats, precisions, out, opset, batch, device, calib_size, calib_method, calib_data,
               fp16_io, bake_preprocess, no_verify, as_json):
    """Export a run's best weights to ONNX / TorchScript / .pt2 (fp32, fp16, int8) with labels and
    preprocessing embedded, verified against PyTorch, plus manifest.json.

    Files are written to temporary names and moved into place only when all are complete and
    verified. TorchScript tracing is deprecated in PyTorch; .pt2 (torch.export) is its successor.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .export import export

    con = console(as_json)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=con,
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("export", total=None)
        result = export(run_dir, formats=formats, precisions=precisions, out=out, opset=opset, batch=batch,
                        device=device, calib_size=calib_size, calib_method=calib_method, calib_data=calib_data,
                        fp16_io=fp16_io, bake_preprocess=bake_preprocess, verify=not no_verify,
                        progress=lambda msg: bar.update(task, description=msg))
    if as_json:
        emit_json(result.to_dict())
        return
    _export_table(con, result)


def _export_table(con, result):
    from rich.table import Table

    if not con.is_terminal:  # a log or CliRunner: keep each artifact on one line
        con.width = max(con.width, 140)
    table = Table(title=f"exported to {result.out_dir} in {result.seconds:.1f} s")
    for col, justify in (("file", "left"), ("format", "left"), ("precision", "left"), ("size", "right"),
                         ("verified", "left")):
        table.add_column(col, justify=justify)
    for a in result.artifacts:
        v = a.verification or {}
        verified = ("[green]yes[/]" if a.verified else "[red]NO[/]") if a.verified is not None else "skipped"
        if v:
            verified += f" (max abs {v['max_abs']:.1e}, top-1 {v['top1_agreement']:.0%})"
        table.add_row(a.file, a.format, a.precision, f"{a.size / 1e6:.1f} MB", verified)
    con.print(table)
    for note in result.skipped:
        con.print(f"[yellow]not produced:[/] {note}")
    con.print(f"manifest: {result.out_dir / 'manifest.json'}")


# ---- predict (engineer A) ----------------------------------------------------------------------
@cli.command("predict")
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=5, show_default=True, type=int, help="Labels per image.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"image", "top": [{"label", "index", "prob"}]}] on stdout.')
@error_boundary
def predict_cmd(model, images, top_k, batch_size, as_json):
    """Classify IMAGES (files or folders) with an exported MODEL.

    MODEL is a .onnx file (runs on onnxruntime without importing torch), an export folder (its
    model.onnx), or a .ts / .pt2 file. Loading TorchScript or .pt2 runs code from the file, so
    those are only loaded when named explicitly: use only files you trust.

    Exit status: 0 when every image was classified; 1 when some could not be read (they are
    reported by name on stderr, the others are still printed); 2 for bad usage.
    """
    from .predict import predict

    result = predict(model, list(images), top_k=top_k, batch_size=batch_size)
    con = console()
    if as_json:
        emit_json(result.results)
    else:
        _predict_table(result)
    for err in result.errors:
        con.print(f"cannot read {err['image']}: {err['error']}", style="red", markup=False, highlight=False)
    if result.errors:
        sys.exit(1)


def _predict_table(result):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model}")
    table.add_column("image", overflow="fold")  # full paths: they are what the user looks for
    for col in ("top-1", "prob", "next"):
        table.add_column(col)
    for r in result.results:
        best, rest = r["top"][0], r["top"][1:]
        table.add_row(r["image"], best["label"], f"{best['prob']:.3f}",
                      ", ".join(f"{t['label']} {t['prob']:.2f}" for t in rest))
    con = Console(highlight=False)
    if not con.is_terminal:  # a pipe or CliRunner: do not squash paths into 80 columns
        con.width = max(con.width, 160)
    con.print(table)
