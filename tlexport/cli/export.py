"""`tlexport export`: a run's best weights -> verified artifacts + manifest.json."""

from __future__ import annotations

import click

from ..tables.artifacts import FORMATS, formats_in_all
from .common import console, emit_json, error_boundary, list_option


@click.command("export")
@click.argument("run_dir", type=click.Path())
@list_option("--format", "--formats", "formats", default=("onnx",), show_default=True, metavar="F[,F...]",
             help=f"{', '.join(FORMATS)} or all (= {', '.join(formats_in_all())}); repeatable or "
                  "comma-separated. openvino needs the openvino extra; executorch, tflite and triton the edge extra.")
@list_option("--precision", "--precisions", "precisions", default=("fp32",), show_default=True, metavar="P[,P...]",
             help="fp32, fp16, int8; repeatable or comma-separated. int8: ONNX, OpenVINO and the edge formats; "
                  "fp16: ONNX, OpenVINO, TorchScript (--device cuda).")
@click.option("--out", type=click.Path(), help="Output folder (default RUN_DIR/export).")
@click.option("--opset", type=int, help="ONNX opset (default: newest supported by both the exporter and onnxruntime).")
@click.option("--batch", default="dynamic", show_default=True, help="'dynamic' (free batch dimension) or a fixed N.")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, or cuda for GPU-only variants (fp16 TorchScript) and verification on the GPU too.")
@click.option("--calib-size", default=256, show_default=True, type=int, help="int8 calibration images.")
@click.option("--calib-method", default="minmax", show_default=True, help="int8 calibration: minmax, percentile, entropy.")
@click.option("--calib-data", type=click.Path(), help="Calibrate on this image folder instead of the run's training split.")
@click.option("--int8-fallback", metavar="auto|none|NODE,...",
              help="int8 layers kept in float: auto (default for most architectures: every Conv/Gemm/MatMul int8, then "
                   "the fewest most sensitive layers in float until the held-out gate passes), none, or node "
                   "names (stem and head name the first convolution and the classifier).")
@click.option("--fp16-io", is_flag=True, help="fp16 ONNX takes and returns float16 (default float32 I/O).")
@click.option("--bake-preprocess", is_flag=True,
              help="Also write model.uint8.onnx: uint8 NHWC RGB crop in, normalisation inside the graph.")
@click.option("--no-verify", is_flag=True, help="Keep artifacts even if they disagree with PyTorch.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifacts as JSON.")
@error_boundary
def command(run_dir, formats, precisions, out, opset, batch, device, calib_size, calib_method, calib_data,
            int8_fallback, fp16_io, bake_preprocess, no_verify, as_json):
    """Export a run's best weights to ONNX / TorchScript / .pt2 / OpenVINO IR (fp32, fp16, int8), or to
    the edge and serving formats (ExecuTorch, LiteRT, ORT mobile, a Triton repository), with labels and
    preprocessing embedded, verified against PyTorch, plus manifest.json.

    Files are written to temporary names and moved into place only when all are complete and
    verified. TorchScript tracing is deprecated in PyTorch; .pt2 (torch.export) is its successor.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..exporters.pipeline import export
    from ..render import export_table

    con = console(as_json)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=con,
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("export", total=None)
        result = export(run_dir, formats=formats, precisions=precisions, out=out, opset=opset, batch=batch,
                        device=device, calib_size=calib_size, calib_method=calib_method, calib_data=calib_data,
                        fp16_io=fp16_io, bake_preprocess=bake_preprocess, verify=not no_verify,
                        int8_fallback=int8_fallback,
                        progress=lambda msg: bar.update(task, description=msg))
    if as_json:
        emit_json(result.to_dict())
        return
    export_table(con, result)
