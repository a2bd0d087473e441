"""`tlexport bench`: latency and throughput of every exported artifact, measured alike."""

from __future__ import annotations

import click

from ..formats.registry import runtime_names
from . import policies as P
from .common import console, error_boundary, list_option, wide_option, write_json, write_report
from .remote import on_option


@click.command("bench")
@click.argument("export_dir", type=click.Path())
@list_option("--runtime", "--runtimes", "runtimes", metavar="R[,R...]", callback=P.names("runtime"),
             help=f"Runtimes to measure: {', '.join(runtime_names())} (default: all available; torch-eager fp32 "
             "is always measured as the baseline).")
@list_option("--precision", "--precisions", "precisions", metavar="P[,P...]", callback=P.names("precision"),
             help="fp32, fp16, int8 (default: all exported).")
@list_option("--device", "--devices", "devices", default=("cpu",), show_default=True, metavar="D[,D...]",
             callback=P.names("device"), help="cpu, cuda.")
@list_option("--batch-size", "--batch-sizes", "batch_sizes", default=("1",), show_default=True, metavar="B[,B...]",
             callback=P.counts("batch size", P.MAX_BATCH), help="Batch sizes to measure, e.g. 1,8,32.")
@click.option("--warmup", default="auto", show_default=True, type=P.CountOrWord("auto"),
              help="Untimed calls per cell: a count, or auto (until latency is stable, bounded).")
@click.option("--iters", type=P.Count(), help="Timed calls per cell (default: a 2 s budget, at least 10 calls).")
@click.option("--duration", type=P.Number(lo_open=True), help="Seconds of timed calls per cell (instead of --iters).")
@list_option("--concurrency", "concurrency", default=("1",), show_default=True, metavar="N[,N...]",
             callback=P.counts("session count"), help="Parallel sessions per cell: throughput and latency under load (1: plain latency).")
@click.option("--strict", is_flag=True, help="Refuse to measure when other processes load the CPU; exit 1 when a "
              "cell was measured beside competing load (the report is still written).")
@click.option("--threads", type=P.Count(), help="Intra-op threads for every runtime (default: library default).")
@click.option("--run-dir", type=click.Path(), help="Run directory for torch-eager (default: the one recorded by the export).")
@click.option("--trust-code", is_flag=True, help="Also load the folder's TorchScript / .pt2 files (loading them runs code stored in them).")
@click.option("--json", "json_file", type=P.ReportFile(), help="Write the full report as JSON to FILE (- for stdout).")
@click.option("--markdown", "md_file", type=P.ReportFile(), help="Write the report as Markdown to FILE (- for stdout).")
@click.option("--plot", "plot_file", type=P.ReportFile(stdout=False), help="Write latency/throughput vs batch size (PNG).")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@wide_option
@on_option()
@error_boundary
def command(export_dir, runtimes, precisions, devices, batch_sizes, warmup, iters, duration, concurrency, strict,
            threads, run_dir, trust_code, json_file, md_file, plot_file, quiet, wide, on):
    """Latency (p50/p90/p99, mean, std, min) and throughput of every exported artifact, per runtime,
    precision, device and batch size, with the speed-up over PyTorch eager fp32 measured in the
    same run, plus load time, first-call latency, peak memory and size on disk. Cells measured
    while other processes load the CPU are flagged noisy. TorchScript and .pt2 files are
    measured only with --trust-code. With --on TARGET the files are timed on that device
    (docs/devices.md; an emulated one's timings are marked as not speeds)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .. import render
    from ..benchmark import BenchOptions, bench
    from ..errors import TlexportError

    P.exclusive(iters=iters, duration=duration)
    P.distinct(json=json_file, markdown=md_file, plot=plot_file)
    export_dir = P.export_folder(export_dir)
    if run_dir is not None:
        run_dir = P.run_folder(run_dir)
    P.require_gpu(devices)
    if on:  # --on TARGET: timed on that device (tlexport.remote), recorded in manifest.json
        from . import remote

        remote.refuse_with_on(strict=strict, run_dir=run_dir, trust_code=trust_code, plot=plot_file,
                              concurrency=None if tuple(concurrency or (1,)) == (1,) else concurrency,
                              device=None if tuple(devices or ()) == ("cpu",) else devices)
        return remote.bench(on, export_dir, runtimes=runtimes, precisions=precisions, batch_sizes=batch_sizes or (1,),
                            warmup=warmup, iters=iters, duration=duration, threads=threads,
                            json_file=json_file, md_file=md_file, quiet=quiet, wide=wide)
    con = console(quiet)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=con,
                  transient=True, disable=quiet) as bar:
        task = bar.add_task("bench", total=None)
        options = BenchOptions(runtimes=runtimes, precisions=precisions, devices=devices or (),
                               batch_sizes=batch_sizes or (), warmup=warmup, iters=iters, duration=duration,
                               threads=threads, run_dir=run_dir, trust_code=trust_code,
                               concurrency=concurrency or (1,), strict=strict)
        report = bench(export_dir, options,
                       progress=lambda label, done, total: bar.update(task, description=label, completed=done,
                                                                      total=total))
    if not quiet:  # the table is a result (stdout), unless a report takes stdout
        out = console(stderr=P.STDOUT in (json_file, md_file))
        out.print(render.bench_table(report, out.width, wide), crop=False)
        for s in report.skipped:
            con.print(f"skipped {s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}", markup=False)
    if json_file:
        write_json(json_file, report)
    if md_file:
        write_report(md_file, report.to_markdown())
    if plot_file:
        render.latency_vs_batch(report, plot_file)
    failed = [r for r in report.results if r.error]
    for r in failed:
        con.print(f"{r.label} batch {r.batch_size} failed: {r.error}", style="red", markup=False, highlight=False)
    if failed and len(failed) == len(report.results):
        raise TlexportError("every runtime failed; see the messages above")
    if report.noisy:
        con.print("noisy: other processes used the CPU while cells marked ! were measured; "
                  "do not quote these numbers", style="yellow", markup=False, highlight=False)
        if strict:
            raise TlexportError("other processes loaded the CPU during the measurement (--strict)")

