"""Edge and serving formats side by side: for resnet18 and mobilenet_v3_large (224 px, trained
briefly on generated data), export ONNX, ExecuTorch (.pte), LiteRT (.tflite) and ONNX Runtime
mobile (.ort), fp32 and int8 (every layer int8), each into its own folder (latency and size: the
parity gates of every format are checked on the trained quickstart model by
quickstart_formats.py), then `tlexport.bench` each folder's runtime beside torch-eager on
the CPU; record file sizes. Writes benchmarks/results/edge-<host>-<date>.md and .json.

Needs the edge extra (pip install -e '.[edge]' && pip install --no-deps executorch==1.5.1).

Usage:
    python benchmarks/edge_bench.py [--archs resnet18,mobilenet_v3_large] [--batch-sizes 1,8]
        [--duration 2] [--threads N] [--train-steps 3] [--image-size 224] [--out benchmarks/results]
    python benchmarks/edge_bench.py --smoke      # 64 px, a few iterations: checks the script only
The machine should be otherwise idle; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without install

# format -> the runtime that runs it (the ONNX row is the desktop baseline)
TARGETS = {"onnx": "onnxruntime", "executorch": "executorch", "tflite": "litert", "ort": "onnxruntime"}


def prepare_run(data: Path, arch: str, work: Path, steps: int, size: int) -> Path:
    from tlexport import TrainConfig, train

    cfg = TrainConfig(data=str(data), arch=arch, weights="none", epochs=1, batch_size=16, image_size=size,
                      out=str(work / arch / "run"), max_steps=steps)
    return Path(train(cfg).run_dir)


def bench_format(arch, fmt, run_dir, work, args) -> dict:
    """Export one format (fp32 + all-layer int8) and bench it with its runtime."""
    import time

    from tlexport.benchmark import bench
    from tlexport.exporters.pipeline import export

    out = work / arch / fmt
    t0 = time.perf_counter()
    # Latency and size only: the model trained a few steps has near-random logits that any int8
    # flips, so int8 is all layers (what `auto` ships when the gate passes on a trained model) and
    # the gates are checked on the trained quickstart model instead (quickstart_formats.py).
    result = export(run_dir, formats=(fmt,), precisions=("fp32", "int8"), out=out, calib_size=args.calib_size,
                    int8_fallback="none", verify=False)
    export_s = time.perf_counter() - t0
    report = bench(out, runtimes=["torch-eager", TARGETS[fmt]], batch_sizes=args.batch_sizes,
                   duration=None if args.iters else args.duration,
                   iters=args.iters, warmup=args.warmup, threads=args.threads, run_dir=run_dir)
    return {"format": fmt, "runtime": TARGETS[fmt], "export_seconds": round(export_s, 1),
            "artifacts": [{"file": a.file, "precision": a.precision, "bytes": a.size,
                           "parity": a.verification} for a in result.artifacts],
            "results": [r.to_dict() for r in report.results], "skipped": report.skipped,
            "environment": report.environment}


def to_markdown(summary: dict) -> str:
    lines = [f"# Edge formats, {summary['host']} {summary['date']}", "",
             f"`{summary['command']}`; load before {summary['load_before']}, after {summary['load_after']}", "",
             "int8 = every layer int8; the parity gates of each format: quickstart-formats-*.md (trained model).", "",
             "| arch | format | file | MB | runtime | batch | p50 ms | img/s | vs eager |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arch in summary["archs"]:
        for f in arch["formats"]:
            for a in f["artifacts"]:
                for r in (r for r in f["results"] if r["runtime"] == f["runtime"] and r["precision"] == a["precision"]):
                    lines.append(
                        f"| {arch['arch']} | {f['format']} | {a['file']} | {a['bytes'] / 1e6:.1f} | "
                        f"{r['runtime']} | {r['batch_size']} | {r['p50_ms'] or float('nan'):.2f} | "
                        f"{r['throughput'] or float('nan'):.1f} | {r['speedup_vs_eager'] or float('nan'):.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet18,mobilenet_v3_large")
    ap.add_argument("--formats", default=",".join(TARGETS))
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per cell (min 10 iterations)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--smoke", action="store_true", help="64 px, 3 iterations: check the script, record nothing")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.smoke:
        args.image_size, args.iters, args.warmup, args.train_steps, args.calib_size = 64, 3, 1, 1, 8
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    from tlexport.data.synth import make_dataset
    from tlexport.fileio import write_json, write_text

    host, date = platform.node() or "host", dt.date.today().isoformat()
    load_before = [round(v, 2) for v in os.getloadavg()]
    tmp = tempfile.TemporaryDirectory(prefix="tlexport-edge-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    data = make_dataset(work / "data", per_class=24 if not args.smoke else 6, val_per_class=10 if not args.smoke else 3,
                        size=max(64, args.image_size + 32), split=True, fmt="jpg")
    archs = []
    for arch in args.archs.split(","):
        print(f"== {arch}: training", flush=True)
        run_dir = prepare_run(data, arch, work, args.train_steps, args.image_size)
        formats = []
        for fmt in args.formats.split(","):
            print(f"== {arch}: {fmt} export + bench", flush=True)
            formats.append(bench_format(arch, fmt, run_dir, work, args))
        archs.append({"arch": arch, "formats": formats})
    summary = {"host": host, "date": date, "smoke": args.smoke,
               "command": "python benchmarks/edge_bench.py " + " ".join(argv or sys.argv[1:]),
               "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()], "archs": archs}
    markdown = to_markdown(summary)
    print(markdown)
    if not args.smoke:  # smoke numbers are meaningless: never recorded
        write_json(args.out / f"edge-{host}-{date}.json", summary)
        write_text(args.out / f"edge-{host}-{date}.md", markdown)
        print(f"wrote {args.out / f'edge-{host}-{date}.md'} and .json")


if __name__ == "__main__":
    main()
