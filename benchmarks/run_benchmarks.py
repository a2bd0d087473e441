"""Reproduce the recorded inference table end to end: data, a short training run, export of every
format x precision, bench on the CPU, int8 agreement, and benchmarks/results/<host>-<date>.md/.json.

For each architecture (default resnet18, resnet50 and mobilenet_v3_large, 224 px):
1. images: `--data DIR` (class sub-folders, e.g. real photos), else a generated JPEG dataset;
2. `tlexport.train` for a few steps (`--weights none` by default: latency does not depend on what
   the weights learned; `--weights imagenet` with the weights in $TORCH_HOME gives a real model);
3. `tlexport.export`: ONNX, TorchScript, .pt2 and OpenVINO IR, fp32/fp16/int8 (accuracy-aware
   int8: the manifest says which layers stayed float and the agreement reached on the val images);
4. `tlexport.bench` at batch 1 and 8 on the CPU: every runtime x precision x artifact, with load
   time, first-call latency, peak memory, size on disk and the competing-load flag;
5. achieved GFLOP/s of every cell beside the measured matmul ceiling (onnxruntime's MLAS kernels,
   fp32 and int8; see matmul_ceiling.py);
6. fp16/int8 top-1 agreement with fp32 ONNX on the val images (onnxruntime and OpenVINO).

Usage (on an idle machine; the competing load is measured and written beside the numbers):
    python benchmarks/run_benchmarks.py [--archs resnet18,resnet50,mobilenet_v3_large]
        [--batch-sizes 1,8] [--duration 3] [--threads N] [--data DIR] [--weights none|imagenet]
        [--work DIR] [--out benchmarks/results] [--strict]
    python benchmarks/run_benchmarks.py --smoke        # tiny sizes: checks the script, not the CPU
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

FORMATS = ("onnx", "torchscript", "pt2", "openvino")
TARGETS = {"int8_over_ort_fp32_b1": ">= 3", "int8_over_ort_fp32_b8": ">= 2", "openvino_int8_ir_vs_ort_int8": "<= 1",
           "int8_vs_eager": "<= 0.35"}


def model_gflop(arch: str, n_classes: int, size: int) -> float:
    """FLOPs of one forward pass at `size` px, counted as 2 x MACs (torch's FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tlexport import models

    model = models.create(arch, n_classes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def prepare_run(data: Path, arch: str, work: Path, args) -> tuple[Path, str]:
    """Train briefly with tlexport's train(); returns (run_dir, how)."""
    from tlexport import TrainConfig, train

    cfg = TrainConfig(data=str(data), arch=arch, weights=args.weights, epochs=1, batch_size=16,
                      image_size=args.image_size, out=str(work / arch / "run"), max_steps=args.train_steps)
    result = train(cfg)
    return Path(result.run_dir), (f"tlexport train, weights {args.weights}, 1 epoch capped at "
                                  f"{args.train_steps} steps of 16")


def export_all(run_dir: Path, out: Path, calib_size: int, int8_fallback: str | None = None):
    from tlexport.exporters.pipeline import export

    t0 = time.perf_counter()
    result = export(run_dir, formats=FORMATS, precisions=("fp32", "fp16", "int8"), out=out,
                    calib_size=calib_size, verify=False, int8_fallback=int8_fallback)
    return result, time.perf_counter() - t0


def agreement(export_dir: Path, run_dir: Path, max_images: int = 500) -> dict:
    """Top-1 agreement of every fp16/int8 model with fp32 ONNX on the run's val images, per
    runtime that runs it (onnxruntime for .onnx, OpenVINO for .onnx and IR)."""
    import numpy as np

    from tlexport import runtimes as rt
    from tlexport.models import load_run
    from tlexport.verify.inputs import load_images

    run = load_run(run_dir)
    inputs = load_images(run.samples("val"), run.preprocess, None, "val split", max_images)

    def top1(runtime):
        with runtime:
            return np.concatenate([runtime.run(b) for _, b in inputs.batches(16)]).argmax(1)

    ref = top1(rt.for_artifact(export_dir / "model.onnx"))
    out = {"images": len(inputs), "source": "the run's val split", "fp32_accuracy": None}
    if inputs.labels is not None:
        out["fp32_accuracy"] = float((ref == inputs.labels).mean())
    found, _ = rt.discover(export_dir, names=["onnxruntime", "openvino"], precisions=("fp16", "int8"))
    for runtime in found:
        key = f"{runtime.name}/{runtime.precision}/{runtime.artifact.name}"
        try:
            out[key] = float((top1(runtime) == ref).mean())
        except Exception as e:  # noqa: BLE001 - a runtime that cannot run is data
            out[key] = f"error: {e}"
    return out


def _cells(report) -> dict:
    return {(r.runtime, r.precision, r.batch_size, r.artifact or ""): r for r in report.results
            if r.error is None and r.concurrency == 1}


def headline(arch: str, report, gflop: float) -> dict:
    """The numbers the issue's targets are about, from one arch's bench report."""
    cells = _cells(report)

    def p50(rt, prec, b, artifact=None):
        hits = [c for (r, p, bb, a), c in cells.items() if (r, p, bb) == (rt, prec, b) and (artifact is None or a == artifact)]
        return hits[0].p50_ms if hits else None

    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    out = {"arch": arch, "gflop_per_image": round(gflop, 3)}
    for b in sorted({k[2] for k in cells}):
        eager, ort32 = p50("torch-eager", "fp32", b), p50("onnxruntime", "fp32", b, "model.onnx")
        ort8, ov8 = p50("onnxruntime", "int8", b, "model.int8.onnx"), p50("openvino", "int8", b, "model.int8.xml")
        out[f"b{b}"] = {"eager_p50_ms": eager, "ort_fp32_p50_ms": ort32, "ort_int8_p50_ms": ort8,
                        "openvino_int8_ir_p50_ms": ov8, "int8_over_ort_fp32": ratio(ort32, ort8),
                        "openvino_int8_ir_vs_ort_int8": ratio(ov8, ort8), "ort_int8_vs_eager": ratio(ort8, eager),
                        "openvino_int8_ir_vs_eager": ratio(ov8, eager)}
    out["targets"] = TARGETS
    return out


def bench_arch(arch, data, work, args, ceiling) -> dict:
    """Train, export, bench and check agreement for one architecture."""
    from tlexport.benchmark import bench
    from tlexport.render import latency_vs_batch

    print(f"== {arch}: training", flush=True)
    run_dir, how = prepare_run(data, arch, work, args)
    print(f"== {arch}: exporting", flush=True)
    exported, export_s = export_all(run_dir, work / arch / "export", args.calib_size, args.int8_fallback)
    export_dir = work / arch / "export"
    print(f"== {arch}: bench", flush=True)
    report = bench(export_dir, runtimes=args.runtimes.split(",") if args.runtimes else None,
                   batch_sizes=[int(b) for b in args.batch_sizes.split(",")], duration=args.duration,
                   warmup=args.warmup, threads=args.threads, run_dir=run_dir, trust_code=True,
                   concurrency=[int(c) for c in args.concurrency.split(",")], strict=args.strict,
                   progress=lambda label, done, total: print(f"   [{done}/{total}] {label}", flush=True))
    n_classes = len(json.loads((run_dir / "run.json").read_text())["classes"])
    gflop = model_gflop(arch, n_classes, args.image_size)
    rows = []
    for r in report.results:
        d = r.to_dict()
        d["gflops_achieved"] = round(gflop * r.throughput, 1) if r.throughput else None
        d["fraction_of_matmul_ceiling"] = (round(d["gflops_achieved"] / ceiling["median_gflops"], 3)
                                           if d["gflops_achieved"] else None)
        rows.append(d)
    args.out.mkdir(parents=True, exist_ok=True)
    latency_vs_batch(report, args.out / f"{args.stem}-{arch}.png", title=f"{arch} {args.image_size} px, CPU")
    return {"arch": arch, "run": f"{how}; --int8-fallback {args.int8_fallback}", "export_seconds": round(export_s, 1),
            "artifacts": [{"file": a.file, "format": a.format, "precision": a.precision,
                           "bytes": a.size + sum(c["size"] for c in a.companions), "int8": a.int8}
                          for a in exported.artifacts],
            "export_skipped": list(exported.skipped), "agreement": agreement(export_dir, run_dir),
            "headline": headline(arch, report, gflop), "environment": report.environment,
            "noisy": report.noisy, "skipped": report.skipped, "results": rows}


def _f(v, d=2) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def _conditions(summary: dict) -> list[str]:
    env = summary["archs"][0]["environment"] if summary["archs"] else {}
    c = summary["matmul_ceiling"]
    int8 = c.get("int8") or {}
    noisy = any(a["noisy"] for a in summary["archs"])
    return [f"# tlexport inference benchmark — {summary['host']}, {summary['date']}", "",
            f"CPU: {env.get('cpu')} ({env.get('usable_cores')} cores); flags: {', '.join(c.get('cpu_flags') or [])}; "
            f"threads {env.get('threads')}; versions: "
            + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v), "",
            f"Competing load (cores used by other processes) before: {summary['competing_load_before']}; "
            f"load average before {summary['load_before']}, after {summary['load_after']}. "
            + ("**Noisy: some cells were measured beside other busy processes; do not quote them.**" if noisy
               else "No cell was measured beside competing load."),
            f"Matmul ceiling ({c['kernel']}, {c['n']}², {c['threads']} threads): fp32 median {c['median_gflops']} GFLOP/s; "
            f"int8 ({int8.get('kernel')}) median {int8.get('median_gflops')} GOP/s "
            f"({'VNNI present' if c.get('vnni') else 'no VNNI: int8 has no fast path here'}). FLOPs = 2 × MACs of the "
            "fp32 model; fp16/int8 cells report model-equivalent GFLOP/s.", ""]


def _headline_table(summary: dict) -> list[str]:
    lines = ["## Headline (p50; targets: int8 ONNX ≥ 3× ORT fp32 at b1, ≥ 2× at b8; OpenVINO int8 IR ≤ ORT int8; "
             "both ≤ 0.35× eager)", "",
             "| arch | batch | eager ms | ORT fp32 ms | ORT int8 ms | OV int8 IR ms | int8 × over ORT fp32 | OV IR / ORT int8 | ORT int8 / eager | OV IR / eager | int8 float layers | int8 agreement (images) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines.insert(1, "\nint8 agreement here is on a model trained for a few steps (near-random logits, tiny margins); "
                    "agreement on a trained model: quickstart-formats-*.md.\n")
    for a in summary["archs"]:
        h = a["headline"]
        rec = next((x["int8"] for x in a["artifacts"] if x["file"] == "model.int8.onnx" and x["int8"]), {}) or {}
        for key in (k for k in h if k.startswith("b")):
            v = h[key]
            lines.append(f"| {a['arch']} | {key[1:]} | {_f(v['eager_p50_ms'])} | {_f(v['ort_fp32_p50_ms'])} | "
                         f"{_f(v['ort_int8_p50_ms'])} | {_f(v['openvino_int8_ir_p50_ms'])} | {_f(v['int8_over_ort_fp32'])} | "
                         f"{_f(v['openvino_int8_ir_vs_ort_int8'])} | {_f(v['ort_int8_vs_eager'])} | "
                         f"{_f(v['openvino_int8_ir_vs_eager'])} | {len(rec.get('float_nodes', []))} | "
                         f"{_f(rec.get('top1_agreement'), 3)} ({rec.get('images')}) |")
    return lines


def _cell_table(a: dict) -> list[str]:
    lines = ["", f"## {a['arch']} — every cell", "", f"Run: {a['run']}; export took {a['export_seconds']} s. "
             f"Agreement with fp32 ONNX on {a['agreement']['images']} val images: "
             + ", ".join(f"{k} {_f(v, 3) if isinstance(v, float) else v}" for k, v in a["agreement"].items()
                         if "/" in k), "",
             "| runtime | precision | file | batch | p50 ms | p99 ms | img/s | vs eager | GFLOP/s | of ceiling | load s | first ms | peak MB | size MB | noisy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in a["results"]:
        head = f"| {r['runtime']}{' ×%d' % r['concurrency'] if r['concurrency'] > 1 else ''} | {r['precision']} | {r['artifact'] or 'weights'} | {r['batch_size']} |"
        if r["error"]:
            lines.append(head + f" error: {r['error']} |" + " |" * 10)
            continue
        frac = r["fraction_of_matmul_ceiling"]
        lines.append(head + f" {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['throughput'], 1)} | "
                     f"{_f(r['speedup_vs_eager'])} | {_f(r['gflops_achieved'], 1)} | {_f(frac and 100 * frac, 0)}% | "
                     f"{_f(r['load_s'], 3)} | {_f(r['first_call_ms'])} | {_f(r['peak_rss_mb'], 0)} | "
                     f"{_f(r['size_bytes'] and r['size_bytes'] / 1e6, 1)} | {'yes' if r['noisy'] else ''} |")
    lines += [f"- skipped {s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}" for s in a["skipped"]]
    return lines


def to_markdown(summary: dict) -> str:
    """The results file: conditions, headline table, then every cell of every arch."""
    lines = _conditions(summary) + _headline_table(summary)
    for a in summary["archs"]:
        lines += _cell_table(a)
    lines += ["", f"Reproduce: `{summary['command']}`", ""]
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet18,resnet50,mobilenet_v3_large")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--runtimes", help="comma list (default: every runtime available here)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell (min 10 iterations)")
    ap.add_argument("--warmup", default="auto", type=lambda v: v if v == "auto" else int(v))
    ap.add_argument("--concurrency", default="1", help="comma list of parallel sessions per cell")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--calib-size", type=int, default=128)
    ap.add_argument("--int8-fallback", default="none",
                    help="export's --int8-fallback (default none: every layer int8, the file `auto` ships when "
                         "the gate passes, as it does on a trained model; a few-step model's near-random logits "
                         "flip under any quantization, so `auto` would keep nearly every layer float)")
    ap.add_argument("--weights", default="none", help="none | imagenet (needs the weights in $TORCH_HOME)")
    ap.add_argument("--data", type=Path, help="image folder with class sub-folders (default: generated)")
    ap.add_argument("--ceiling-n", type=int, default=2048)
    ap.add_argument("--strict", action="store_true", help="refuse to measure on a busy machine")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, results under the work folder")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results; smoke: WORK/results)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.image_size, args.train_steps, args.duration, args.calib_size = 64, 1, 0.2, 8
        args.batch_sizes, args.ceiling_n, args.warmup = "1,2", 256, 2
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from matmul_ceiling import matmul_ceiling

    from tlexport.data.synth import make_dataset
    from tlexport.fileio import write_json, write_text
    from tlexport.measure import competing_load

    host, date = platform.node() or "host", dt.date.today().isoformat()
    args.stem = f"{host}-{date}" + ("-smoke" if args.smoke else "")
    load_before, other_before = [round(v, 2) for v in os.getloadavg()], competing_load(1.0)
    tmp = tempfile.TemporaryDirectory(prefix="tlexport-bench-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    args.out = args.out or (work / "results" if args.smoke else HERE / "results")
    per_class, val = (6, 4) if args.smoke else (24, 10)
    data = args.data or make_dataset(work / "data", per_class=per_class, val_per_class=val,
                                     size=max(args.image_size + 32, 96), split=True, fmt="jpg")
    ceiling = matmul_ceiling(args.ceiling_n, 3 if args.smoke else 10, args.threads)
    archs = [bench_arch(arch, data, work, args, ceiling) for arch in args.archs.split(",")]
    summary = {"host": host, "date": date, "command": "python benchmarks/run_benchmarks.py " + " ".join(argv),
               "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
               "competing_load_before": None if other_before is None else round(other_before, 2),
               "smoke": args.smoke, "matmul_ceiling": ceiling, "archs": archs}
    write_json(args.out / f"{args.stem}.json", summary)
    write_text(args.out / f"{args.stem}.md", to_markdown(summary))
    print(to_markdown(summary))
    print(f"wrote {args.out / (args.stem + '.md')} and .json")


if __name__ == "__main__":
    main()
