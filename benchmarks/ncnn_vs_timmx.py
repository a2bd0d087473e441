"""tlexport's ncnn file against the peer exporter's (timmx, which also converts through pnnx), same
weights, same ncnn runtime settings, same machine, one run.

resnet18 is trained one step by `tlexport train` on generated images (a real run folder), then its
BatchNorm statistics are measured on generated images (so activations are those of a trained net,
not the denormal floods of fresh initialisation), and the run's weights are written back. timm's
resnet18 has torchvision's state-dict keys, so timmx loads the same file (`--checkpoint`). Both
export fp16 (timmx's default: fp16 weights) and fp32. Each file's param is compared layer by layer
(type and fields, tlexport's shape hints aside), then every file is loaded with the ncnn runtime's
own options (`tlexport.formats.ncnn.runtime.net_options`: Winograd, im2col-GEMM and packed
layouts on; fp16 storage and arithmetic for fp16 files only; `--threads` threads) and timed at
batch 1, interleaved: after a warm-up of each, every round times each file in turn (the order
rotating), so drift and neighbours hit all files alike. `tlexport fp16 (no hints)` is tlexport's
graph with its shape hints removed: the same graph as the peer's, so its gap to the peer's file is
the noise of the run. Writes benchmarks/results/ncnn-vs-timmx-<date>.md and .json with the CPU
model and flags, versions, the load before/after and the other processes' CPU use while timing.

timmx is installed beside the shared Python, not in it (its timm is not tlexport's dependency):
    python -m venv --system-site-packages /tmp/venv-timmx && /tmp/venv-timmx/bin/pip install timmx==0.10.1

Usage (on an otherwise idle machine; check `uptime`):
    python benchmarks/ncnn_vs_timmx.py --timmx-python /tmp/venv-timmx/bin/python
        [--image-size 224] [--threads 2] [--rounds 30] [--per-round 10] [--warmup 20]
    python benchmarks/ncnn_vs_timmx.py --timmx-python ... --smoke   # 64 px, a few calls: records nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without install

TARGET = 1.05  # judged: tlexport's p50 within 5% of the peer's, or faster
TIMMX_EXPORT = """
import sys
from timmx.api import export_model
out, checkpoint, classes, size, fp16 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
export_model("ncnn", "resnet18", output=out, checkpoint=checkpoint, num_classes=classes,
             input_size=(3, size, size), fp16=fp16)
"""


def prepare_run(work: Path, size: int, images: int) -> Path:
    """A resnet18 run folder whose best weights have BatchNorm statistics measured on images."""
    import torch
    from safetensors.torch import save_file

    from tlexport import TrainConfig, train
    from tlexport.data.synth import make_dataset
    from tlexport.models import load_run

    data = make_dataset(work / "data", per_class=max(4, images // 3), val_per_class=4, size=size + size // 7,
                        split=True, fmt="jpg")
    cfg = TrainConfig(data=str(data), arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=size,
                      out=str(work / "run"), max_steps=1)
    run = load_run(train(cfg).run_dir)
    model = run.load_model("best", device="cpu")
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the batch below
            m.reset_running_stats()
    batch = torch.stack([torch.from_numpy(run.preprocess.to_array(run.preprocess.load(p)))
                         for p, _ in run.samples("train")[:images]])
    with torch.no_grad():
        model.train()(batch)
    save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, str(run.weights_file("best")))
    return run.dir


def export_tlexport(run_dir: Path, out: Path) -> dict:
    from tlexport.exporters.pipeline import export

    result = export(run_dir, formats=("ncnn",), precisions=("fp32", "fp16"), out=out, verify=True)
    return {a.precision: {"folder": out / a.file, "verification": a.verification} for a in result.artifacts}


def export_timmx(python: str, run_dir: Path, work: Path, size: int, classes: int) -> dict:
    """timmx's ncnn folders (fp16 and fp32), with links named as tlexport's runtime opens them."""
    out = {}
    for precision in ("fp16", "fp32"):
        folder = work / f"timmx-{precision}"
        cmd = [python, "-c", TIMMX_EXPORT, str(folder), str(run_dir / "best.safetensors"), str(classes), str(size),
               "1" if precision == "fp16" else "0"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if done.returncode != 0:
            sys.exit(f"timmx export failed:\n{done.stderr[-2000:]}")
        view = work / f"timmx-{precision}-view"
        view.mkdir()
        (view / "model.param").symlink_to(folder / "model.ncnn.param")
        (view / "model.bin").symlink_to(folder / "model.ncnn.bin")
        out[precision] = {"folder": view, "verify": done.stdout.strip().splitlines()[-1:]}
    return out


def without_hints(layer) -> tuple[str, ...]:
    """A layer's fields less tlexport's shape hints (and the input's declared shape)."""
    from tlexport.formats.ncnn.metadata import SHAPE_HINTS

    drop = {SHAPE_HINTS} | ({"0", "1", "2"} if layer.type == "Input" else set())
    return tuple(p for p in layer.params if p.split("=", 1)[0] not in drop)


def strip_hints(folder: Path, dst: Path) -> Path:
    """A copy of an ncnn folder whose param carries no shape hints (pnnx's graph as it wrote it)."""
    import dataclasses

    from tlexport.formats.ncnn.metadata import Graph, read_param

    dst.mkdir()
    graph = read_param(folder / "model.param")
    layers = tuple(dataclasses.replace(layer, params=without_hints(layer)) for layer in graph.layers)
    (dst / "model.param").write_text(Graph(layers).text())
    (dst / "model.bin").symlink_to(folder / "model.bin")
    return dst


def compare_graphs(ours: Path, peer: Path) -> dict:
    """Layer count and types of both params, and whether they are the same graph: same layer
    types in order with the same fields, tlexport's shape hints (and the input shape) aside."""
    from tlexport.formats.ncnn.metadata import SHAPE_HINTS, read_param

    def census(graph):
        counts = {}
        for layer in graph.layers:
            counts[layer.type] = counts.get(layer.type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def fields(layer):
        return layer.type, len(layer.bottoms), len(layer.tops), tuple(sorted(without_hints(layer)))

    a, b = read_param(ours / "model.param"), read_param(peer / "model.param")
    return {"tlexport_layers": len(a.layers), "timmx_layers": len(b.layers), "tlexport_types": census(a),
            "timmx_types": census(b), "same_graph": [fields(x) for x in a.layers] == [fields(x) for x in b.layers],
            "same_weights": (ours / "model.bin").read_bytes() == (peer / "model.bin").read_bytes(),
            "tlexport_has_shape_hints": all(x.param(SHAPE_HINTS) for x in a.layers)}


def time_interleaved(variants: list[dict], size: int, threads: int, args) -> dict:
    """Per variant: every timed call's seconds, interleaved over rounds; plus the other processes'
    CPU use while timing."""
    from tlexport.benchmark import make_inputs
    from tlexport.formats.ncnn.runtime import load_net, option_values, run_one
    from tlexport.measure import CpuLoad

    nets = []
    for v in variants:
        net, inp, outp = load_net(v["folder"], v["precision"], threads)
        v["options"] = option_values(v["precision"], threads)  # what load_net set: recorded
        nets.append((net, inp, outp))
    images = [b[0] for b in make_inputs(1, size, n=4)]
    for net, inp, outp in nets:
        for i in range(args.warmup):
            run_one(net, inp, outp, images[i % len(images)])
    times = [[] for _ in variants]
    load = CpuLoad().start()
    for r in range(args.rounds):
        order = [(r + k) % len(variants) for k in range(len(variants))]
        for k in order:
            net, inp, outp = nets[k]
            for i in range(args.per_round):
                t0 = time.perf_counter()
                run_one(net, inp, outp, images[i % len(images)])
                times[k].append(time.perf_counter() - t0)
    competing = load.stop()
    for net, _, _ in nets:
        net.clear()
    return {"times": times, "competing_cores": competing}


def summary_rows(variants: list[dict], timed: dict) -> list[dict]:
    from tlexport.benchmark import summarize

    rows = []
    for v, times in zip(variants, timed["times"]):
        s = summarize(times, 1)
        rows.append({"variant": v["name"], "precision": v["precision"], "calls": len(times),
                     **{k: round(s[k], 3) for k in ("p50_ms", "p90_ms", "mean_ms", "min_ms")},
                     "options": v["options"]})
    by_name = {r["variant"]: r for r in rows}
    for r in rows:
        peer = by_name.get(f"timmx {r['precision']}")
        r["vs_timmx_p50"] = round(r["p50_ms"] / peer["p50_ms"], 4) if peer else None
    return rows


def to_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# ncnn: tlexport vs timmx, resnet18, {report['date']}", "",
             f"`{report['command']}`", "",
             f"CPU: {env['cpu']} ({env['usable_cores']} usable cores), flags {' '.join(env['cpu_flags'])}; "
             f"ncnn {report['versions'].get('ncnn')}, pnnx {report['versions'].get('pnnx')}, timmx "
             f"{report['versions'].get('timmx')}; {report['threads']} threads, batch 1, {report['image_size']} px; "
             f"load before {report['load_before']}, after {report['load_after']}; other processes used "
             f"{report['competing_cores']} cores while timing" + (" (NOISY: do not quote)" if report["noisy"] else ""), "",
             "| file | calls | p50 ms | p90 ms | mean ms | min ms | p50 vs timmx |", "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        ratio = f"{r['vs_timmx_p50']:.3f}x" if r["vs_timmx_p50"] else "-"
        lines.append(f"| {r['variant']} | {r['calls']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['mean_ms']:.2f} | "
                     f"{r['min_ms']:.2f} | {ratio} |")
    g = report["graphs"]["fp16"]
    lines += ["", f"Graphs (fp16): tlexport {g['tlexport_layers']} layers, timmx {g['timmx_layers']}; same graph "
              f"(types and fields, shape hints aside): {g['same_graph']}; same weights: {g['same_weights']}; "
              f"layer types {g['tlexport_types']}.", "",
              f"Target: tlexport fp16 p50 <= {TARGET:.2f}x timmx fp16 p50: **{report['verdict']}**."]
    return "\n".join(lines) + "\n"


def versions(python: str) -> dict:
    from tlexport.envinfo import library_version

    out = {name: library_version(name) for name in ("ncnn", "pnnx", "torch", "torchvision")}
    code = "import importlib.metadata as m; print(m.version('timmx'), m.version('timm'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    out["timmx"], out["timm"] = (done.stdout.split() + [None, None])[:2] if done.returncode == 0 else (None, None)
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timmx-python", default=sys.executable, help="a Python that can import timmx")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=10, help="timed calls of one file per round")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls of each file first")
    ap.add_argument("--bn-images", type=int, default=32, help="images the BatchNorm statistics are measured on")
    ap.add_argument("--smoke", action="store_true", help="64 px, a few calls: checks the script, records nothing")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.smoke:
        args.image_size, args.rounds, args.per_round, args.warmup, args.bn_images = 64, 2, 2, 1, 6
    return args


def measure(args, work: Path) -> dict:
    from tlexport.envinfo import environment, load_average

    load_before = load_average()
    print("== run folder (one step, BatchNorm statistics measured)", flush=True)
    run_dir = prepare_run(work, args.image_size, args.bn_images)
    classes = len(json.loads((run_dir / "run.json").read_text())["classes"])
    print("== tlexport export (ncnn fp32 + fp16, verified)", flush=True)
    ours = export_tlexport(run_dir, work / "tlexport")
    print("== timmx export (ncnn fp16 + fp32)", flush=True)
    peer = export_timmx(args.timmx_python, run_dir, work, args.image_size, classes)
    graphs = {p: compare_graphs(ours[p]["folder"], peer[p]["folder"]) for p in ("fp16", "fp32")}
    variants = [{"name": "tlexport fp16", "precision": "fp16", "folder": ours["fp16"]["folder"]},
                {"name": "timmx fp16", "precision": "fp16", "folder": peer["fp16"]["folder"]},
                {"name": "tlexport fp16 (no hints)", "precision": "fp16",
                 "folder": strip_hints(ours["fp16"]["folder"], work / "tlexport-fp16-nohints")},
                {"name": "tlexport fp32", "precision": "fp32", "folder": ours["fp32"]["folder"]},
                {"name": "timmx fp32", "precision": "fp32", "folder": peer["fp32"]["folder"]}]
    print(f"== timing {len(variants)} files interleaved, {args.rounds} rounds x {args.per_round} calls", flush=True)
    timed = time_interleaved(variants, args.image_size, args.threads, args)
    results = summary_rows(variants, timed)
    ratio = next(r["vs_timmx_p50"] for r in results if r["variant"] == "tlexport fp16")
    noisy = timed["competing_cores"] is not None and timed["competing_cores"] > 0.25
    return {"date": dt.date.today().isoformat(), "smoke": args.smoke, "image_size": args.image_size,
            "threads": args.threads, "environment": environment(args.threads), "versions": versions(args.timmx_python),
            "graphs": graphs, "results": results, "load_before": load_before, "load_after": load_average(),
            "competing_cores": None if timed["competing_cores"] is None else round(timed["competing_cores"], 3),
            "noisy": noisy, "tlexport_verification": {p: v["verification"] for p, v in ours.items()},
            "verdict": ("met" if ratio <= TARGET else "missed") + f" ({ratio:.3f}x)"}


def main(argv=None):
    args = parse_args(argv)
    for module in ("ncnn", "pnnx"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            sys.exit(f"{module} is not installed: pip install -e '.[ncnn]'")
    if subprocess.run([args.timmx_python, "-c", "import timmx"], capture_output=True).returncode:
        sys.exit(f"{args.timmx_python} cannot import timmx; see this script's docstring for the venv")
    tmp = tempfile.TemporaryDirectory(prefix="tlexport-ncnn-vs-timmx-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = measure(args, work)
    finally:
        if tmp:
            shutil.rmtree(work, ignore_errors=True)
    report["command"] = "python benchmarks/ncnn_vs_timmx.py " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = to_markdown(report)
    print(markdown)
    if not args.smoke:  # smoke numbers are meaningless: never recorded
        from tlexport.fileio import write_json, write_text

        name = f"ncnn-vs-timmx-{report['date']}"
        write_json(args.out / f"{name}.json", report)
        write_text(args.out / f"{name}.md", markdown)
        print(f"wrote {args.out / name}.md and .json")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
