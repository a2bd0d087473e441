"""`--on TARGET` for parity, bench and predict: the commands hand over here when it is given
(tlexport.remote runs the agent there; this module only renders and chooses the exit code)."""

from __future__ import annotations

import sys

import click

from .common import STDOUT, ParityProgress, console, show_predictions, write_json, write_report

ON_HELP = ("Run on a target instead of here: ssh://[user@]host[:port][#options] (OpenSSH, key auth, batch mode) "
           "or cmd:PREFIX (a command that starts the target's Python: a venv, chroot, docker exec -i); "
           "docs/devices.md.")


def on_option():
    return click.option("--on", "on", metavar="TARGET", help=ON_HELP)


def refuse_with_on(**given) -> None:
    """Options that have no meaning on a target: a usage error naming the first one given."""
    from ..errors import UsageError

    for name, value in given.items():
        if value not in (None, False, (), "auto"):
            raise UsageError(f"--{name.replace('_', '-')} cannot be combined with --on")


def _where(on: str) -> str:
    from ..remote.target import parse

    return parse(on).where


def _progress(quiet: bool):
    """A transient status line on stderr's terminal (none when it is not one): what is being sent
    and which file runs on the target, so a slow board or an emulated one is never silent."""
    return ParityProgress(console(stderr=True), quiet)


def parity(on, export_dir, *, json_file, md_file, quiet, progress, wide=False, **kw):
    """parity on a target: the same report, table and exit code as local parity."""
    from .. import render as rep
    from ..remote.verify import parity_on

    result = parity_on(on, export_dir, progress=progress.staged(_where(on)), **kw)
    if json_file:
        write_json(json_file, result)
    if md_file:
        write_report(md_file, rep.parity_markdown(result))
    if quiet:
        click.echo("PASS" if result.passed else "FAIL", err=STDOUT in (json_file, md_file))
    else:
        rep.render_parity(result, console(), wide=wide)
    if not result.passed:
        sys.exit(1)


def bench(on, export_dir, *, json_file, md_file, quiet, wide=False, **kw):
    """bench on a target: a table per file and batch size; timings of an emulated target are
    shown as not speeds."""
    from ..errors import TlexportError
    from ..remote.verify import bench_on

    with _progress(quiet) as progress:
        report = bench_on(on, export_dir, progress=progress.staged(_where(on)), **kw)
    if not quiet:
        out = console(stderr=STDOUT in (json_file, md_file))
        out.print(bench_table(report, out.width, wide), crop=False)
        for s in report.skipped:  # whole lines: a terminal may wrap them, a log must not
            click.echo(f"skipped {s['file']}: {s['reason']}", err=True)
        for n in report.notes:
            click.echo(n, err=True)
    if json_file:
        write_json(json_file, report)
    if md_file:
        write_report(md_file, report.to_markdown())
    failed = [r for r in report.rows if r.get("error")]
    for r in failed:
        console().print(f"{r['file']} failed: {r['error']}", style="red", markup=False, highlight=False)
    if not report.rows or len(failed) == len(report.rows):
        raise TlexportError(f"nothing could be timed on {on}; see the messages above")


def bench_table(report, width: int | None = None, wide: bool = False):
    """The target's timings, fitted to the terminal like local bench's table: the file is never
    cut, lower-priority columns go first (`wide`: every column)."""
    from rich.markup import escape

    from ..remote.verify import EMULATED
    from ..render import FILE, fitted_table

    title = f"bench on {report.target}" + (f" — {EMULATED}" if report.emulated else "")
    columns = [("file", "left", FILE), ("runtime", "left", 60), ("precision", "left", 70), ("batch", "right", 80),
               ("p50 ms", "right", 90), ("p90 ms", "right", 50), ("mean ms", "right", 40), ("img/s", "right", 85)]
    rows = []
    for r in report.rows:
        if r.get("error"):
            rows.append([escape(r["file"]), r["runtime"], r["precision"], "", "error", "", "", ""])
            continue
        nums = [f"{r[k]:.3g}" for k in ("p50_ms", "p90_ms", "mean_ms", "throughput")]
        if report.emulated:
            nums = [f"({n})" for n in nums]
        rows.append([escape(r["file"]), r["runtime"], r["precision"], str(r["batch_size"]), *nums])
    caption = f"{EMULATED}: numbers in brackets are qemu's, not the device's" if report.emulated else None
    return fitted_table(title, columns, rows, None if wide else width, caption=caption)


def predict(on, model, images, *, top_k, batch_size, as_json):
    """predict on a target: the images are decoded there; the same output as local predict."""
    from ..remote.verify import predict_on

    with _progress(False) as progress:
        result, notes = predict_on(on, model, list(images), top_k=top_k, batch_size=batch_size,
                                   progress=progress.staged(_where(on)))
    for n in notes:
        click.echo(n, err=True)
    show_predictions(result, as_json)
