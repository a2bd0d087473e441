"""Reproduce the headline inference table end to end: generate data, train briefly, export
fp32/fp16/int8, bench on the CPU, and write benchmarks/results/<host>-<date>.md and .json.

For each architecture (default resnet18 and resnet50, 224 px):
1. synthetic JPEG dataset (tlexport.data.synth.make_dataset), shared by all archs;
2. `tlexport.train` for a few steps from scratch (weights="none": latency does not depend
   on what the weights learned; int8 agreement is still measured on real val images);
3. `tlexport.export` to ONNX fp32/fp16/int8 (+ TorchScript and .pt2 fp32);
4. `tlexport.bench` at batch 1 and 8 on the CPU (all runtimes available here);
5. achieved GFLOP/s of every cell (FLOPs counted by torch.utils.flop_counter as 2 x MACs:
   resnet18 3.64, resnet50 8.18 GFLOP per 224-px image) beside a measured fp32 matmul ceiling;
6. int8 (and fp16) top-1 agreement with fp32 ONNX on the val images, through onnxruntime.

Usage:
    python benchmarks/run_benchmarks.py [--archs resnet18,resnet50] [--batch-sizes 1,8]
        [--duration 2] [--threads N] [--train-steps 3] [--work DIR] [--out benchmarks/results]
The machine should be otherwise idle; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without install
sys.path.insert(0, str(HERE))


def model_gflop(arch: str, n_classes: int, size: int = 224) -> float:
    """FLOPs of one forward pass at `size` px, counted as 2 x MACs (torch's FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tlexport import models

    model = models.create(arch, n_classes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def prepare_run(data: Path, arch: str, work: Path, steps: int) -> tuple[Path, str]:
    """Train briefly with tlexport's train(); returns (run_dir, how)."""
    from tlexport import TrainConfig, train

    out = work / arch / "run"
    cfg = TrainConfig(data=str(data), arch=arch, weights="none", epochs=1, batch_size=16, image_size=224,
                      out=str(out), max_steps=steps)
    result = train(cfg)
    return Path(result.run_dir), f"tlexport train, 1 epoch capped at {steps} steps of 16, from scratch"


def export_all(run_dir: Path, out: Path):
    from tlexport.exporters.pipeline import export

    t0 = time.perf_counter()
    result = export(run_dir, formats=("onnx", "torchscript", "pt2"), precisions=("fp32", "fp16", "int8"),
                    out=out, calib_size=64, verify=False)
    return result, time.perf_counter() - t0


def agreement(export_dir: Path, run_dir: Path, max_images: int = 200) -> dict:
    """Top-1 agreement of fp16 / int8 ONNX with fp32 ONNX on the run's val images (onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    from tlexport.data.images import load_rgb
    from tlexport.models import load_run

    run = load_run(run_dir)
    samples = run.samples("val")[:max_images]
    x = np.stack([run.preprocess.to_array(load_rgb(p)) for p, _ in samples]).astype(np.float32)
    labels = np.array([y for _, y in samples])

    def top1(name):
        sess = ort.InferenceSession(str(export_dir / name), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {"image": x[i:i + 16]})[0] for i in range(0, len(x), 16)]).argmax(1)

    ref = top1("model.onnx")
    out = {"images": len(samples), "fp32_accuracy": float((ref == labels).mean())}
    for prec, name in (("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx")):
        if (export_dir / name).is_file():
            out[f"{prec}_top1_agreement"] = float((top1(name) == ref).mean())
    return out


def headline(arch: str, report, gflop: float) -> dict:
    """The numbers the issue's targets are about, from one arch's bench report."""
    cells = {(r.runtime, r.precision, r.batch_size): r for r in report.results if r.error is None}

    def p50(rt, prec, b=1):
        c = cells.get((rt, prec, b))
        return c.p50_ms if c else None

    eager, ort32, ort8 = p50("torch-eager", "fp32"), p50("onnxruntime", "fp32"), p50("onnxruntime", "int8")
    ov8 = p50("openvino", "int8")
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    return {"arch": arch, "gflop_per_image": round(gflop, 3), "eager_p50_ms": eager, "ort_fp32_p50_ms": ort32,
            "ort_int8_p50_ms": ort8, "openvino_int8_p50_ms": ov8,
            "ort_fp32_over_eager": ratio(ort32, eager), "target_ort_fp32_over_eager": "<= 0.6",
            "int8_speedup_over_ort_fp32": ratio(ort32, ort8), "target_int8_speedup": ">= 2.5",
            "openvino_int8_speedup_over_ort_fp32": ratio(ort32, ov8)}


def bench_arch(arch, data, work, args, ceiling) -> dict:
    """Train, export, bench and check agreement for one architecture."""
    from tlexport.benchmark import bench
    from tlexport.render import latency_vs_batch

    print(f"== {arch}: training", flush=True)
    run_dir, how = prepare_run(data, arch, work, args.train_steps)
    print(f"== {arch}: exporting", flush=True)
    exported, export_s = export_all(run_dir, work / arch / "export")
    export_dir = work / arch / "export"
    print(f"== {arch}: bench", flush=True)
    report = bench(export_dir, runtimes=args.runtimes.split(",") if args.runtimes else None,
                   batch_sizes=[int(b) for b in args.batch_sizes.split(",")], duration=args.duration,
                   warmup=args.warmup, threads=args.threads, run_dir=run_dir,
                   progress=lambda label, done, total: print(f"   [{done}/{total}] {label}", flush=True))
    n_classes = len(json.loads((run_dir / "run.json").read_text())["classes"])
    gflop = model_gflop(arch, n_classes)
    rows = []
    for r in report.results:
        d = r.to_dict()
        d["gflops_achieved"] = round(gflop * r.throughput, 1) if r.throughput else None
        d["fraction_of_matmul_ceiling"] = (round(d["gflops_achieved"] / ceiling["median_gflops"], 3)
                                           if d["gflops_achieved"] else None)
        rows.append(d)
    args.out.mkdir(parents=True, exist_ok=True)
    latency_vs_batch(report, args.out / f"{args.stem}-{arch}.png", title=f"{arch} 224 px, CPU")
    return {"arch": arch, "run": how, "export_seconds": round(export_s, 1),
            "artifacts": [{"file": a.file, "precision": a.precision, "bytes": a.size} for a in exported.artifacts],
            "export_skipped": list(exported.skipped),
            "agreement": agreement(export_dir, run_dir), "headline": headline(arch, report, gflop),
            "environment": report.environment, "skipped": report.skipped, "results": rows}


def to_markdown(summary: dict) -> str:
    """The results file: conditions, headline table per arch, then every cell."""
    env = summary["archs"][0]["environment"] if summary["archs"] else {}
    c = summary["matmul_ceiling"]
    lines = [f"# tlexport inference benchmark — {summary['host']}, {summary['date']}", "",
             f"CPU: {env.get('cpu')} ({env.get('usable_cores')} cores, flags {', '.join(env.get('cpu_flags') or [])}); "
             f"threads {env.get('threads')}; versions: "
             + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v), "",
             f"Load average before: {summary['load_before']}, after: {summary['load_after']} "
             f"(on {env.get('usable_cores')} cores; > 0.5 means other work shared the CPU and the numbers are noisy).",
             f"fp32 matmul ceiling (torch.mm {c['n']}², {c['threads']} threads): median {c['median_gflops']} GFLOP/s, "
             f"best {c['best_gflops']} GFLOP/s. FLOPs = 2 × MACs of the fp32 model; for fp16/int8 cells the GFLOP/s "
             "are model-equivalent (int8 kernels can exceed the fp32 ceiling).", "",
             "## Headline (batch 1, p50)", "",
             "| arch | GFLOP/img | eager ms | ORT fp32 ms | ORT int8 ms | OpenVINO int8 ms | ORT fp32 / eager (≤ 0.6) | int8 speed-up over ORT fp32 (≥ 2.5) | OpenVINO int8 over ORT fp32 | int8 top-1 agreement |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for a in summary["archs"]:
        h, g = a["headline"], a["agreement"]
        lines.append(f"| {a['arch']} | {h['gflop_per_image']:.2f} | {f(h['eager_p50_ms'])} | {f(h['ort_fp32_p50_ms'])} | "
                     f"{f(h['ort_int8_p50_ms'])} | {f(h['openvino_int8_p50_ms'])} | {f(h['ort_fp32_over_eager'])} | "
                     f"{f(h['int8_speedup_over_ort_fp32'])}× | {f(h['openvino_int8_speedup_over_ort_fp32'])}× | "
                     f"{f(g.get('int8_top1_agreement', None), 3)} ({g['images']} val images) |")
    for a in summary["archs"]:
        lines += ["", f"## {a['arch']} — every cell", "", f"Run: {a['run']}; export took {a['export_seconds']} s.", "",
                  "| runtime | precision | batch | p50 ms | p90 ms | p99 ms | mean ± std ms | img/s | vs eager | GFLOP/s | of ceiling | iters |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in a["results"]:
            if r["error"]:
                lines.append(f"| {r['runtime']} | {r['precision']} | {r['batch_size']} | error: {r['error']} |||||||||")
                continue
            lines.append(f"| {r['runtime']} | {r['precision']} | {r['batch_size']} | {f(r['p50_ms'])} | {f(r['p90_ms'])} | "
                         f"{f(r['p99_ms'])} | {f(r['mean_ms'])} ± {f(r['std_ms'])} | {f(r['throughput'], 1)} | "
                         f"{f(r['speedup_vs_eager'])}× | {f(r['gflops_achieved'], 1)} | "
                         f"{f(r['fraction_of_matmul_ceiling'] and 100 * r['fraction_of_matmul_ceiling'], 0)}% | {r['iters']} |")
        if a["skipped"]:
            lines += [""] + [f"- skipped {s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}" for s in a["skipped"]]
    lines += ["", f"Reproduce: `{summary['command']}`", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet18,resnet50")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--runtimes", help="comma list (default: every runtime available here)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per cell (min 10 iterations)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    from matmul_ceiling import matmul_ceiling

    from tlexport.fileio import write_json, write_text
    from tlexport.data.synth import make_dataset

    host, date = platform.node() or "host", dt.date.today().isoformat()
    args.stem = f"{host}-{date}"
    load_before = [round(v, 2) for v in os.getloadavg()]
    tmp = tempfile.TemporaryDirectory(prefix="tlexport-bench-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    data = make_dataset(work / "data", per_class=24, val_per_class=10, size=256, split=True, fmt="jpg")
    ceiling = matmul_ceiling(2048, 10, args.threads)
    archs = [bench_arch(arch, data, work, args, ceiling) for arch in args.archs.split(",")]
    summary = {"host": host, "date": date, "command": "python benchmarks/run_benchmarks.py " + " ".join(argv or sys.argv[1:]),
               "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
               "matmul_ceiling": ceiling, "archs": archs}
    write_json(args.out / f"{args.stem}.json", summary)
    write_text(args.out / f"{args.stem}.md", to_markdown(summary))
    print(to_markdown(summary))
    print(f"wrote {args.out / (args.stem + '.md')} and .json")


if __name__ == "__main__":
    main()
