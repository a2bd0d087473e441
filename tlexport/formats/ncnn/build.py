"""ncnn export: the model traced to TorchScript at 1x3xCROPxCROP, converted by the pnnx tool (the
`pnnx` wheel's binary) at its highest optimisation level into `model.param` + `model.bin`, fp32 or
fp16 weights (pnnx's `fp16=`; ncnn's fp16 storage), then given ncnn's shape hints and written into
a `model.ncnn/` folder beside its `metadata.json`.

Shape hints are what `ncnnoptimize` writes after its shape inference (not in the wheels): the
input's w/h/c and, on every layer, the shapes of its outputs (param id 30). ncnn reads them when
it loads the graph and picks a convolution's Winograd variant (F(2,3), F(4,3) or F(6,3)) for the
size it will see; without them it picks one for any size. They are computed here by running the
converted graph once in ncnn at the crop size. The graph itself is pnnx's, unchanged.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ... import progress as P
from ...errors import ExportError, first_line
from ...exporters.job import Artifact
from ...fileio import write_text
from ...procs import dying_with_us
from ...tables.metadata import to_json
from . import META, PARAM, SPEC, WEIGHTS
from .metadata import SHAPE_HINTS, Graph, read_param

PNNX_TIMEOUT_S = 1800
OPTLEVEL = 2  # pnnx's highest: operator fusion and the ncnn-specific rewrites


def trace(job, path: Path) -> None:
    """TorchScript of the model at batch 1 (ncnn graphs have no batch dimension)."""
    import warnings

    import torch

    model = job.model_on("cpu")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        torch.jit.trace(model, job.example[:1].contiguous(), check_trace=False).save(str(path))


def pnnx(traced: Path, crop: int, half: bool, param: Path, weights: Path) -> None:
    """Run the pnnx tool on a TorchScript file; its side outputs stay in the traced file's folder.

    Raises:
        ExportError: pnnx failed or wrote no ncnn graph.
    """
    import pnnx as tool

    # pnnx runs in the traced file's folder (its side outputs land there), so every path it is
    # handed must be absolute: a path relative to the user's folder names nothing from there
    traced, param, weights = traced.absolute(), param.absolute(), weights.absolute()
    work = traced.parent
    side = {key: work / name for key, name in (("pnnxparam", "pnnx.param"), ("pnnxbin", "pnnx.bin"),
                                               ("pnnxpy", "pnnx_model.py"), ("pnnxonnx", "pnnx.onnx"),
                                               ("ncnnpy", "ncnn_model.py"))}
    args = [tool.EXEC_PATH, traced.name, f"inputshape=[1,3,{crop},{crop}]f32", f"fp16={int(half)}",
            f"optlevel={OPTLEVEL}", "device=cpu", f"ncnnparam={param}", f"ncnnbin={weights}",
            *(f"{k}={v}" for k, v in side.items())]
    try:
        args, guard = dying_with_us(args)  # never outlives tlexport, even killed
        done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S,
                              preexec_fn=guard)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ExportError(f"pnnx could not run ({first_line(e)})") from None
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        raise ExportError(_failure(done, param, weights))


def _failure(done, param: Path, weights: Path) -> str:
    """What went wrong, in one line: the status pnnx exited with, or (pnnx exits 0 after a failed
    write) the file it did not write; then its own error line when it printed one (its last
    line is often a statistic such as "memory OPS", which says nothing)."""
    lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
    said = next((ln for ln in lines if any(w in ln.lower() for w in ("error", "fail", "cannot", "unable"))), None)
    what = (f"exited with status {done.returncode}" if done.returncode != 0 else
            f"exited 0 but wrote no {param.name if not param.is_file() else weights.name} in {param.parent}")
    return f"pnnx could not convert the model to ncnn: it {what}" + (f" ({said[:200]})" if said else "")


def shape_hints(folder: Path, crop: int) -> Graph:
    """Rewrite the folder's param with the input's shape and every layer's output shapes at `crop`.

    Raises:
        ExportError: ncnn cannot load or run the graph pnnx wrote (an operator it has no layer for).
    """
    from ...errors import RuntimeUnavailable
    from .runtime import load_net

    graph = read_param(folder / PARAM)
    unknown = sorted({layer.type for layer in graph.layers if "." in layer.type})  # pnnx's unmapped operators
    if unknown:
        raise ExportError(f"pnnx could not map every operator of the model to an ncnn layer (left {', '.join(unknown)}): "
                          "ncnn cannot run it")
    try:
        net, input_name, _ = load_net(folder, "fp32", None)
    except RuntimeUnavailable as e:
        raise ExportError(f"pnnx wrote an ncnn graph that ncnn cannot use: {e}") from None
    try:
        shapes = _blob_shapes(net, input_name, graph, crop)
    finally:
        net.clear()
    layers = []
    for layer in graph.layers:
        hints = [v for top in layer.tops for v in shapes[top]]
        values = {SHAPE_HINTS: ",".join(map(str, [len(hints), *hints]))}
        if layer.type == "Input":
            values = {"0": str(crop), "1": str(crop), "2": "3", **values}
        layers.append(layer.with_params(values))
    hinted = Graph(tuple(layers))
    write_text(folder / PARAM, hinted.text())
    return hinted


def _blob_shapes(net, input_name: str, graph: Graph, crop: int) -> dict[str, tuple[int, ...]]:
    """(dims, w, h, d, c) of every blob, from one run of `net` on a crop x crop image. The
    extractor and the Mats it returns die here, before the caller clears the net (ncnn aborts when
    a net's allocator goes while a Mat of it lives)."""
    import ncnn
    import numpy as np

    image = np.zeros((3, crop, crop), np.float32)  # kept alive: ncnn.Mat does not own it
    out = {}
    with net.create_extractor() as ex:
        ex.set_light_mode(False)  # keep every blob: one pass computes them all
        ex.input(input_name, ncnn.Mat(image))
        for layer in graph.layers:
            for top in layer.tops:
                ret, m = ex.extract(top)
                if ret != 0 or m.dims == 0:
                    raise ExportError(f"ncnn could not run the converted graph to layer {layer.name} ({layer.type})")
                out[top] = (m.dims, m.w, m.h, m.d, m.c)
                del m
    return out


def make_folder(job, traced: Path, precision: str, say) -> Artifact:
    """One `model[.fp16].ncnn/` folder in the staging area."""
    crop = job.run.preprocess.crop
    folder = job.staging / SPEC.file(precision).name
    folder.mkdir()
    say(f"ncnn {precision}")
    with P.step("waiting for pnnx (conversion)"):
        pnnx(traced, crop, precision == "fp16", folder / PARAM, folder / WEIGHTS)
    graph = shape_hints(folder, crop)
    write_text(folder / META, to_json(job.meta))
    notes = [f"pnnx optlevel {OPTLEVEL} from a TorchScript trace at 1x3x{crop}x{crop}; ncnn shape hints for {crop} px "
             "(any size runs); no batch dimension: one image per call",
             f"{len(graph.layers)} layers: " + ", ".join(f"{n} {t}" for t, n in _census(graph))]
    if precision == "fp16":
        notes.append("fp16 weights (ncnn fp16 storage); computed in fp16 where the CPU has fp16 arithmetic "
                     "(ARMv8.2), else in fp32")
    classes = len(job.meta["classes"])
    side = ["height", "width"] if job.dynamic_size else [crop, crop]  # --dynamic-size: verified at other sizes
    return Artifact(folder.name, SPEC.name, precision, notes=notes,
                    inputs=[{"name": graph.inputs[0].tops[0], "dtype": "float32", "shape": [3, *side]}],
                    outputs=[{"name": graph.outputs[0], "dtype": "float32", "shape": [classes]}])


def _census(graph: Graph) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for layer in graph.layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def build(job, say) -> list[Artifact]:
    """model.ncnn/ (fp32) or model.fp16.ncnn/: the precision it is handed."""
    with tempfile.TemporaryDirectory(prefix=".ncnn-work-", dir=job.staging) as work:
        traced = Path(work) / "model.pt"
        say(f"ncnn {job.precision}")
        with P.step("tracing to TorchScript for pnnx"):
            trace(job, traced)
        return [make_folder(job, traced, job.precision, say)]
