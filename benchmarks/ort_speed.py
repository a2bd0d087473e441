"""`.ort` against the `.onnx` it was converted from, on onnxruntime, on this CPU (#20.3).

An `.ort` file is not optimized again when onnxruntime loads it: what the conversion saved is
what runs. tlexport's default conversion (`--ort-target portable`) saves the optimizations every
CPU build can load (ARM included), without onnxruntime's x86 channel-blocked NCHWc layout, so on
x86 its fp32 runs slower than the `.onnx` (which gets NCHWc at load). `--ort-target amd64` saves
that layout too (for x86 CPUs of the exporting CPU's vector width). This script exports both,
times model.onnx, the portable model.ort and the amd64 model.ort side by side in interleaved
rounds (fp32, and int8 against model.int8.onnx) at batch 1 and 8, 2 threads, and checks the
target: `.ort` p50 within 5% of its `.onnx` p50. Writes benchmarks/results/ort-speed-<host>-<date>.md/.json.

Usage (idle machine):
    python benchmarks/ort_speed.py [--archs resnet18,mobilenet_v3_large,efficientnet_b0] [--rounds 30]
    python benchmarks/ort_speed.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from int8_speed import build_exports, model_options, run, time_pair  # noqa: E402  (after the path set-up)

TOLERANCE = 0.05  # .ort p50 at most 5% above its .onnx p50


def bench_arch(arch: str, data: Path, work: Path, args) -> dict:
    portable = build_exports(arch, data, work, args, formats=("onnx", "ort"), name="portable")
    amd64 = build_exports(arch, data, work, args, formats=("onnx", "ort"), name="amd64", ort_target="amd64")
    rows = []
    for precision, suffix in (("fp32", ""), ("int8", ".int8")):
        links = {f"model{suffix}.onnx": portable / f"model{suffix}.onnx", f"portable{suffix}.ort": portable / f"model{suffix}.ort",
                 f"amd64{suffix}.ort": amd64 / f"model{suffix}.ort"}
        side = work / arch / "side-by-side"
        side.mkdir(exist_ok=True)
        for name, target in links.items():
            (side / name).unlink(missing_ok=True)
            (side / name).symlink_to(target)
        for b in args.batch_sizes:
            cell = time_pair("onnxruntime", side, list(links), b, args)
            base = next(r for r in cell if r["file"].endswith(".onnx"))
            for r in cell:
                r["precision"] = precision
                r["vs_onnx"] = round(r["p50_ms"] / base["p50_ms"], 3)
                r["within_5pct"] = r["vs_onnx"] <= 1 + TOLERANCE
            rows += cell
    return {"arch": arch, "rows": rows}


def to_markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"# .ort vs .onnx on onnxruntime, {summary['host']} {summary['date']}", "",
             f"`{summary['command']}`", "",
             f"CPU: {env.get('cpu')}; flags: {' '.join(env.get('cpu_flags') or [])}; threads {summary['threads']}; "
             f"load average before {summary['load_before']}, after {summary['load_after']}", "",
             "portable: `--ort-target portable` (default); amd64: `--ort-target amd64`. Target: p50 within 5% of the .onnx.",
             "", "| arch | precision | batch | file | p50 ms | p90 ms | / .onnx p50 | within 5% | noisy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in summary["archs"]:
        for r in a["rows"]:
            ok = "" if r["file"].endswith(".onnx") else ("✓" if r["within_5pct"] else "✗")
            lines.append(f"| {a['arch']} | {r['precision']} | {r['batch']} | {r['file']} | {r['p50_ms']:.2f} | "
                         f"{r['p90_ms']:.2f} | {r['vs_onnx']:.2f} | {ok} | {'noisy' if r['noisy'] else ''} |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet18,mobilenet_v3_large,efficientnet_b0")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=10, help="timed calls of each file per round")
    model_options(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.image_size, args.train_steps, args.calib_size = "mobilenet_v3_small", 64, 1, 8
        args.rounds, args.calls, args.batch_sizes = 2, 1, "1"
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run("ort-speed", argv, args, bench_arch, to_markdown)


if __name__ == "__main__":
    main()
