"""Where the time of an int8 (and its fp32) model goes, per operator type, in onnxruntime and OpenVINO.

onnxruntime: `SessionOptions.enable_profiling`; each node's kernel time is the median over the
calls (a descheduled call on a busy machine is an outlier, not the typical cost), summed per
operator type; convolutions are split into depthwise, 1x1 and k x k from the optimized graph
(`optimized_model_filepath`). The optimized graph also says which Q/DQ groups onnxruntime fused
into one integer kernel (QLinearConv, QLinearMul, QGemm, QLinearGlobalAveragePool, ...) and how
many DequantizeLinear -> float op -> QuantizeLinear chains were left.

OpenVINO: `compile_model(..., PERF_COUNT)` and the request's `profiling_info` after each call;
median per node, summed per (layer type, kernel): the kernel's name ends in its precision
(`_I8` int8, `_f32`), so it shows which layers ran in int8 and what the FakeQuantize / Reorder /
Subtract / Convert overhead of a graph costs.

Relative shares are what to read on a busy machine (all inflated alike at 1 thread); absolute
times only on an idle one. Models are built like int8_speed.py (the same export code).
Writes benchmarks/results/int8-profile-<host>-<date>.md and .json.

Usage:
    python benchmarks/int8_profile.py [--archs mobilenet_v3_large,efficientnet_b0] [--threads 1]
        [--batch 1] [--calls 40] [--work DIR]
    python benchmarks/int8_profile.py --export-dir EXPORT_DIR    # an existing export folder
    python benchmarks/int8_profile.py --smoke
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from int8_speed import build_exports, model_options, run  # noqa: E402  (after the path set-up)

ORT_FILES = ("model.onnx", "model.int8.onnx")
OV_FILES = ("model.xml", "model.int8.xml", "model.int8.onnx")
FUSED_PREFIXES = ("QLinear", "QGemm", "QAttention", "MatMulInteger", "ConvInteger", "DynamicQuantize")


def _inputs(batch: int, crop: int):
    import numpy as np

    return np.random.default_rng(0).standard_normal((batch, 3, crop, crop), dtype=np.float32)


def conv_kinds(optimized: Path) -> dict[str, str]:
    """Node name -> group label of an optimized ONNX graph (convolutions by kind)."""
    import onnx
    from onnx import helper

    out = {}
    for node in onnx.load(str(optimized), load_external_data=False).graph.node:
        label = node.op_type
        if "Conv" in node.op_type:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            kernel = list(attrs.get("kernel_shape", []))
            label += " dw" if attrs.get("group", 1) > 1 else (" 1x1" if kernel == [1, 1] else " kxk")
        out[node.name] = label
    return out


def ort_profile(path: Path, crop: int, args, work: Path) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort

    opt = work / f"{path.stem}.optimized.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = args.threads, 3
    so.enable_profiling, so.profile_file_prefix = True, str(work / f"prof-{path.stem}")
    so.optimized_model_filepath = str(opt)
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = _inputs(args.batch, crop)
    for _ in range(args.calls):
        session.run(None, {session.get_inputs()[0].name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    kinds = conv_kinds(opt)
    per_node = collections.defaultdict(list)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time")
            per_node[name].append(e["dur"])
            ops[name] = e["args"].get("op_name", "?")
    groups = collections.defaultdict(lambda: [0.0, 0])
    for name, durs in per_node.items():
        label = kinds.get(name, ops[name])
        groups[label][0] += float(np.median(durs)) / 1e3
        groups[label][1] += 1
    graph = onnx.load(str(opt), load_external_data=False).graph
    fused = sum(n.op_type.startswith(FUSED_PREFIXES) for n in graph.node)
    unfused = sum(n.op_type == "DequantizeLinear" for n in graph.node)
    return {"runtime": "onnxruntime", "file": path.name, "groups": _rows(groups),
            "fused_int8_kernels": fused, "dequantize_left": unfused}


def ov_profile(path: Path, crop: int, args) -> dict:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERF_COUNT": True, "INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    x = _inputs(args.batch, crop)
    per_node = collections.defaultdict(list)
    labels = {}
    for _ in range(args.calls):
        request.infer({0: x})
        for pc in request.profiling_info:
            if pc.status == pc.Status.EXECUTED:
                per_node[pc.node_name].append(pc.real_time.total_seconds() * 1e3)
                labels[pc.node_name] = f"{pc.node_type} [{pc.exec_type}]"
    groups = collections.defaultdict(lambda: [0.0, 0])
    for name, times in per_node.items():
        groups[labels[name]][0] += float(np.median(times))
        groups[labels[name]][1] += 1
    layer = [k for k in labels.values() if k.split(" ")[0] in ("Convolution", "GroupConvolution", "FullyConnected")]
    return {"runtime": "openvino", "file": path.name, "groups": _rows(groups),
            "int8_layers": sum(k.lower().endswith("i8]") for k in layer),
            "float_layers": sum(k.endswith("f32]") for k in layer),
            "fakequantize": sum(k.startswith("FakeQuantize") for k in labels.values())}


def _rows(groups: dict) -> list[dict]:
    total = sum(ms for ms, _ in groups.values()) or 1.0
    rows = [{"group": k, "ms": round(ms, 4), "share": round(ms / total, 4), "nodes": n} for k, (ms, n) in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def profile_folder(folder: Path, args, work: Path) -> list[dict]:
    import importlib.util

    from tlexport.formats.metadata import read_metadata

    crop = int(read_metadata(folder / "model.onnx")["preprocess"]["crop"])
    out = [ort_profile(folder / f, crop, args, work) for f in ORT_FILES if (folder / f).is_file()]
    if importlib.util.find_spec("openvino"):
        out += [ov_profile(folder / f, crop, args) for f in OV_FILES if (folder / f).is_file()]
    return out


def to_markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"# int8 profile per operator type, {summary['host']} {summary['date']}", "",
             f"`{summary['command']}`", "",
             f"CPU: {env.get('cpu')}; flags: {' '.join(env.get('cpu_flags') or [])}; threads {summary['threads']}; "
             f"batch {summary['batch']}; load average before {summary['load_before']}, after {summary['load_after']}",
             "", "Per group: the sum over its nodes of each node's median kernel time (ms per call) and its share.", ""]
    for a in summary["archs"]:
        for p in a["profiles"]:
            total = sum(r["ms"] for r in p["groups"])
            extra = (f"fused int8 kernels {p['fused_int8_kernels']}, DequantizeLinear left {p['dequantize_left']}"
                     if p["runtime"] == "onnxruntime" else
                     f"int8 layers {p['int8_layers']}, float layers {p['float_layers']}, FakeQuantize {p['fakequantize']}")
            lines += [f"## {a['arch']}: {p['file']} on {p['runtime']} ({total:.2f} ms; {extra})", "",
                      "| group | ms | share | nodes |", "|---|---|---|---|"]
            lines += [f"| {r['group']} | {r['ms']:.3f} | {r['share']:.1%} | {r['nodes']} |" for r in p["groups"][:14]]
            lines.append("")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="mobilenet_v3_large,efficientnet_b0,mobilenet_v2,resnet18")
    ap.add_argument("--export-dir", type=Path, help="profile this export folder instead of building models")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calls", type=int, default=40)
    model_options(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.image_size, args.train_steps, args.calib_size, args.calls = "mobilenet_v3_small", 64, 1, 8, 3
    return args


def profile_arch(arch: str, data, work: Path, args) -> dict:
    """An architecture's export built like int8_speed.py's, or with --export-dir that folder."""
    folder = args.export_dir if data is None else build_exports(arch, data, work, args)
    return {"arch": arch, "profiles": profile_folder(folder, args, work)}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.export_dir:
        args.archs = str(args.export_dir)
    run("int8-profile", argv, args, profile_arch, to_markdown, batch=args.batch)


if __name__ == "__main__":
    main()
