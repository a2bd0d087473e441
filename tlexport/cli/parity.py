"""`tlexport parity`: every runtime against PyTorch, image by image, with gates and an exit code."""

from __future__ import annotations

import sys

import click

from ..formats.registry import runtime_names
from . import policies as P
from .common import ParityProgress, console, error_boundary, list_option, wide_option, write_json, write_report
from .remote import on_option


@click.command("parity")
@click.argument("export_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Image folder; <class>/* sub-folders named like the run's classes give labels (default: the run's val split).")
@click.option("--random", "random_n", type=P.Count(), help="Compare on N seeded random-normal inputs instead of images.")
@click.option("--reference", default="torch-eager", show_default=True, callback=P.reference,
              help="Reference runtime, or name/precision/device.")
@list_option("--runtime", "--runtimes", "runtimes", metavar="R[,R...]", callback=P.names("runtime"),
             help=f"Runtimes to compare: {', '.join(runtime_names())} (default: all the export allows).")
@list_option("--device", "--devices", "devices", default=("cpu",), show_default=True, metavar="D[,D...]",
             callback=P.names("device"), help="cpu, cuda.")
@list_option("--precision", "--precisions", "precisions", metavar="P[,P...]", callback=P.names("precision"),
             help="fp32, fp16, int8 (default: all exported).")
@click.option("--atol", type=P.Number(), help="fp32 absolute tolerance on logits (default: the architecture's, in `tlexport archs --json`).")
@click.option("--rtol", type=P.Number(), help="fp32 relative tolerance on logits (default: the architecture's, in `tlexport archs --json`).")
@click.option("--max-images", type=P.Count(), help="Use at most N images (spread over the list).")
@click.option("--batch-size", default=16, show_default=True, type=P.BATCH)
@click.option("--run-dir", type=click.Path(), help="The training run (default: from manifest.json / the parent folder).")
@click.option("--trust-code", is_flag=True, help="Also run the folder's TorchScript / .pt2 files (loading them runs code stored in them).")
@click.option("--json", "json_file", type=P.ReportFile(), help="Write the full report as JSON to FILE (- for stdout).")
@click.option("--markdown", "md_file", type=P.ReportFile(), help="Write the table as Markdown to FILE (- for stdout).")
@click.option("--quiet", is_flag=True, help="Only the final PASS/FAIL line.")
@wide_option
@on_option()
@error_boundary
def command(export_dir, data, random_n, reference, runtimes, devices, precisions, atol, rtol, max_images,
            batch_size, run_dir, trust_code, json_file, md_file, quiet, wide, on):
    """Check that every exported artifact and runtime agrees with PyTorch, image by image.

    Exit 0 when every compared runtime passes its gates, 1 when any fails, 2 for bad usage.
    Gates: fp32 within --atol/--rtol and 100% top-1 agreement; fp16 finite and >= 99% top-1;
    int8 >= 98% top-1 and <= 1 point accuracy drop when labels are known. TorchScript and .pt2
    files run code when loaded: they are compared only with --trust-code. With --on TARGET the
    files run on that device (docs/devices.md) and the result is recorded in manifest.json.
    """
    from .. import render as rep
    from ..verify.parity import ParityOptions, parity

    P.exclusive(data=data, random=random_n)
    P.distinct(json=json_file, markdown=md_file)
    export_dir = P.export_folder(export_dir)
    if data is not None:
        data = P.input_path(data, "data folder")
    if run_dir is not None:
        run_dir = P.run_folder(run_dir)
    P.require_gpu(devices)
    con = console()
    if on:  # --on TARGET: the files run there (tlexport.remote), the reference and gates stay here
        from . import remote

        remote.refuse_with_on(trust_code=trust_code, reference=None if reference == "torch-eager" else reference,
                              device=None if tuple(devices or ()) == ("cpu",) else devices)
        with ParityProgress(con, quiet) as progress:
            return remote.parity(on, export_dir, data=data, random=random_n, runtimes=runtimes,
                                 precisions=precisions, atol=atol, rtol=rtol, max_images=max_images,
                                 batch_size=batch_size, run_dir=run_dir, json_file=json_file, md_file=md_file,
                                 quiet=quiet, progress=progress, wide=wide)
    with ParityProgress(con, quiet) as progress:
        options = ParityOptions(data=data, random=random_n, reference=reference, runtimes=runtimes,
                                devices=devices or (), precisions=precisions, atol=atol, rtol=rtol,
                                max_images=max_images, batch_size=batch_size, run_dir=run_dir, trust_code=trust_code)
        result = parity(export_dir, options, progress=progress)
    if json_file:
        write_json(json_file, result)
    if md_file:
        write_report(md_file, rep.parity_markdown(result))
    if quiet:  # stdout, unless a report took it
        click.echo("PASS" if result.passed else "FAIL", err=P.STDOUT in (json_file, md_file))
    else:
        rep.render_parity(result, con, wide=wide)
    if not result.passed:
        sys.exit(1)
