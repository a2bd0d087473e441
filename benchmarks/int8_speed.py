"""int8 against fp32 on every tested small architecture and the ResNets, per runtime, on this CPU.

For each architecture (224 px, trained a few steps on generated data: latency does not depend on
what the weights learned), export ONNX + OpenVINO IR in fp32 and int8 exactly as `tlexport export`
makes them (every layer int8: `--int8-fallback none`, the file `auto` ships when its gate holds),
then time, per runtime, the fp32 and int8 files side by side in interleaved rounds (the machine's
drift hits both alike; `tlexport.exporters.speed.time_files` run longer), at batch 1 and 8 with
2 intra-op threads:

    onnxruntime: model.onnx vs model.int8.onnx
    openvino:    model.xml vs model.int8.xml (NNCF where nncf is installed) and model.int8.onnx (QDQ)

Reports median and p90 wall ms, median process-CPU ms per call, int8/fp32 speed-up, the competing
load of each cell (> 0.25 cores: noisy), CPU model and flags, library versions. Writes
benchmarks/results/int8-speed-<host>-<date>.md and .json.

Targets (issue #20): int8 >= 1.0x fp32 on every architecture and runtime on a CPU without VNNI;
>= 2x for mobilenet_v3_large and efficientnet_b0 on a VNNI CPU; ResNets >= 3x.

Usage (idle machine: `uptime` load near 0, nothing else running):
    python benchmarks/int8_speed.py [--archs A,B] [--batch-sizes 1,8] [--threads 2] [--rounds 30]
    python benchmarks/int8_speed.py --smoke     # 64 px, 2 archs, a few rounds: checks the script only
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
sys.path.insert(0, str(HERE))

SMALL = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0",
         "regnet_x_400mf", "regnet_y_400mf")
ARCHS = SMALL + ("resnet18", "resnet50")
PAIRS = {  # runtime -> (fp32 file, int8 files)
    "onnxruntime": ("model.onnx", ("model.int8.onnx",)),
    "openvino": ("model.xml", ("model.int8.xml", "model.int8.onnx")),
}
TARGETS = {"mobilenet_v3_large": 2.0, "efficientnet_b0": 2.0, "resnet18": 3.0, "resnet50": 3.0}  # VNNI CPU


def build_exports(arch: str, data: Path, work: Path, args, formats=("onnx", "openvino"), name="export",
                  **options) -> Path:
    """A short training run of `arch` (made once per work folder) and its fp32 + all-layer int8
    export into WORK/ARCH/NAME (unverified: latency only; the int8 gates are judged on trained
    models by quickstart_formats.py). `options`: more of export()'s keywords."""
    from run_benchmarks import prepare_run

    from tlexport.exporters.pipeline import export

    out = work / arch / name
    if not (out / "manifest.json").is_file():
        run_dir = work / arch / "run"
        if not (run_dir / "run.json").is_file():
            run_dir, _ = prepare_run(data, arch, work, args)
        export(run_dir, formats=formats, precisions=("fp32", "int8"), out=out, calib_size=args.calib_size,
               int8_fallback="none", verify=False, **options)
    return out


def model_options(ap: argparse.ArgumentParser) -> None:
    """The options every int8/ort script shares: how its models are made and where results go."""
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--weights", default="none")
    ap.add_argument("--data", type=Path, help="image folder with class sub-folders (default: generated)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, results under the work folder")
    ap.add_argument("--work", type=Path, help="scratch folder kept between runs (default: a temp dir)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results; smoke: WORK/results)")


def run(name: str, argv: list[str], args, per_arch, to_md, **extra) -> None:
    """Make a work folder and the generated images (none with --export-dir), call
    `per_arch(arch, data, work, args) -> dict` for each of --archs, and write
    benchmarks/results/NAME-HOST-DATE.md and .json with the machine, the load before and after,
    the command and `extra`."""
    from tlexport.envinfo import environment
    from tlexport.fileio import write_json, write_text

    host, date = platform.node() or "host", dt.date.today().isoformat()
    stem = f"{name}-{host}-{date}" + ("-smoke" if args.smoke else "")
    load_before = [round(v, 2) for v in os.getloadavg()]
    tmp = tempfile.TemporaryDirectory(prefix=f"tlexport-{name}-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or (work / "results" if args.smoke else HERE / "results")
    data = None if getattr(args, "export_dir", None) else generated_data(work, args)
    measured = {**extra, "archs": [per_arch(a, data, work, args) for a in args.archs.split(",")]}
    summary = {"host": host, "date": date, "command": f"python benchmarks/{name.replace('-', '_')}.py " + " ".join(argv), "threads": args.threads, "load_before": load_before,
               "load_after": [round(v, 2) for v in os.getloadavg()], "environment": environment(args.threads),
               **measured}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", summary)
    write_text(out / f"{stem}.md", to_md(summary))
    print(to_md(summary))
    print(f"wrote {out / (stem + '.md')} and .json")


def generated_data(work: Path, args) -> Path:
    from tlexport.data.synth import make_dataset

    per_class, val = (6, 4) if args.smoke else (24, 10)
    return args.data or make_dataset(work / "data", per_class=per_class, val_per_class=val,
                                     size=max(args.image_size + 32, 96), split=True, fmt="jpg")


def time_pair(runtime: str, folder: Path, files: list[str], batch: int, args) -> list[dict]:
    """Interleaved timing of `files` on `runtime`: one row per file."""
    import numpy as np

    from tlexport.exporters.speed import time_files
    from tlexport.measure import is_noisy
    from tlexport.tables.artifacts import kind_of_file

    present = [f for f in files if (folder / f).is_file()]
    got = time_files(runtime, [(folder / f, kind_of_file(folder / f).precision) for f in present],
                     args.image_size, batch=batch, threads=args.threads, min_rounds=args.rounds,
                     max_rounds=args.rounds, budget_s=0, calls=args.calls)
    load = got["competing_load"]
    return [{"runtime": runtime, "file": f, "batch": batch, "p50_ms": round(got["ms"][i], 3),
             "p90_ms": round(float(np.percentile(got["times_ms"][i], 90)), 3), "cpu_ms": round(got["cpu_ms"][i], 3),
             "calls": len(got["times_ms"][i]), "competing_load": None if load is None else round(load, 3),
             "noisy": is_noisy(load)} for i, f in enumerate(present)]


def bench_arch(arch: str, data: Path, work: Path, args) -> dict:
    folder = build_exports(arch, data, work, args)
    rows = []
    for runtime, (fp32, int8s) in PAIRS.items():
        if runtime in args.skip_runtimes:
            continue
        for b in args.batch_sizes:
            cell = time_pair(runtime, folder, [fp32, *int8s], b, args)
            base = next((r for r in cell if r["file"] == fp32), None)
            for r in cell:
                r["speedup_vs_fp32"] = round(base["p50_ms"] / r["p50_ms"], 3) if base and r["p50_ms"] else None
                r["cpu_speedup_vs_fp32"] = round(base["cpu_ms"] / r["cpu_ms"], 3) if base and r["cpu_ms"] else None
            rows += cell
    return {"arch": arch, "rows": rows}


def to_markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"# int8 vs fp32 per runtime, {summary['host']} {summary['date']}", "",
             f"`{summary['command']}`", "",
             f"CPU: {env.get('cpu')}; flags: {' '.join(env.get('cpu_flags') or [])}; VNNI: {summary['vnni']}; "
             f"threads {summary['threads']}; load average before {summary['load_before']}, after {summary['load_after']}",
             f"versions: {', '.join(f'{k} {v}' for k, v in (env.get('versions') or {}).items() if v)}, "
             f"nncf {summary.get('nncf')}", "",
             "Every layer int8; 224 px unless the command says otherwise; interleaved rounds, median (p50) and p90 of "
             "wall ms, median process-CPU ms per call. A cell beside > 0.25 cores of other work is marked noisy: then "
             "read the CPU-time speed-up (the process's own CPU time, what the machine's load inflates least).", "",
             "| arch | runtime | batch | file | p50 ms | p90 ms | CPU ms | int8 / fp32 speed-up | CPU-time speed-up | "
             "target | noisy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in summary["archs"]:
        for r in a["rows"]:
            int8 = ".int8." in r["file"]
            target = TARGETS.get(a["arch"], 1.0) if summary["vnni"] else 1.0
            mark = "" if not int8 or r["speedup_vs_fp32"] is None else (" ✓" if r["speedup_vs_fp32"] >= target else " ✗")
            lines.append(f"| {a['arch']} | {r['runtime']} | {r['batch']} | {r['file']} | {r['p50_ms']:.2f} | "
                         f"{r['p90_ms']:.2f} | {r['cpu_ms']:.2f} | {r['speedup_vs_fp32']:.2f}x{mark} | "
                         f"{r.get('cpu_speedup_vs_fp32') or float('nan'):.2f}x | "
                         f"{'>= ' + format(target, 'g') + 'x' if int8 else ''} | {'noisy' if r['noisy'] else ''} |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds per cell")
    ap.add_argument("--calls", type=int, default=10, help="timed calls of each file per round")
    ap.add_argument("--skip-runtimes", default="", help="comma list, e.g. openvino")
    model_options(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.image_size, args.train_steps, args.calib_size = "mobilenet_v3_small,resnet18", 64, 1, 8
        args.rounds, args.calls, args.batch_sizes = 2, 1, "1,2"
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    args.skip_runtimes = {r for r in args.skip_runtimes.split(",") if r}
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from tlexport.envinfo import cpu_flags, library_version

    run("int8-speed", argv, args, bench_arch, to_markdown, vnni=any("vnni" in f for f in cpu_flags()),
        nncf=library_version("nncf"))


if __name__ == "__main__":
    main()
