"""Does 2-process DDP on the CPU reach the single-process accuracy? The quickstart recipe (resnet18
from scratch, 4 generated shapes, 48 px, AdamW 2e-3, 12 epochs) trained with `--nproc 1` at batch
32 and `--nproc 2` at batch 16 per process (the same effective batch of 32), for several seeds; the
val accuracy, the seconds per epoch (epochs 2+) and the run's recorded world size.

Usage (an idle machine):
    python benchmarks/ddp_accuracy.py [--seeds 0,1] [--epochs 12] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tlexport-ddp-accuracy"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()

    from tlexport.data.synth import make_dataset
    from tlexport.envinfo import environment

    data = a.work / "data"
    if not data.exists():
        make_dataset(data, classes=("circle", "square", "triangle", "star"), per_class=150, size=64, seed=0)
    rows = []
    for nproc, batch in ((1, 32), (2, 16)):
        for seed in [int(s) for s in a.seeds.split(",")]:
            out = a.work / f"nproc{nproc}-seed{seed}-{int(time.time())}"
            cmd = [sys.executable, "-m", "tlexport", "train", "--data", str(data), "--arch", "resnet18",
                   "--weights", "none", "--epochs", str(a.epochs), "--batch-size", str(batch), "--optimizer", "adamw",
                   "--lr", "2e-3", "--weight-decay", "1e-4", "--warmup-epochs", "0.5", "--crop-scale", "0.35",
                   "--image-size", "48", "--seed", str(seed), "--nproc", str(nproc), "--out", str(out), "--quiet"]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
            run = json.loads((out / "run.json").read_text())
            with open(out / "metrics.csv") as f:
                hist = list(csv.DictReader(f))
            rows.append({"nproc": nproc, "batch_per_process": batch, "seed": seed,
                         "world_size": run.get("world_size"),
                         "best_val_accuracy": run["metrics"]["best_val_accuracy"],
                         "epoch_s": round(statistics.mean(float(h["seconds"]) for h in hist[1:]), 2),
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    env = environment()
    stamp = time.strftime("%Y-%m-%d")
    lines = [f"# 2-process CPU DDP vs one process on the quickstart recipe ({stamp})", "",
             f"`python benchmarks/ddp_accuracy.py --seeds {a.seeds} --epochs {a.epochs}`: resnet18 from scratch, "
             "4 shapes x 150 images, 48 px, AdamW 2e-3, effective batch 32 (1 x 32 or 2 x 16).", "",
             f"CPU: {env.get('cpu')}; usable cores {env.get('usable_cores')}.", "",
             "| nproc | batch/process | seed | world_size in run.json | best val acc | s/epoch (2+) | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nproc']} | {r['batch_per_process']} | {r['seed']} | {r['world_size']} | "
                     f"{r['best_val_accuracy']:.1%} | {r['epoch_s']} | {r['wall_s']} |")
    acc = {n: [r["best_val_accuracy"] for r in rows if r["nproc"] == n] for n in (1, 2)}
    sec = {n: statistics.mean(r["epoch_s"] for r in rows if r["nproc"] == n) for n in (1, 2)}
    lines += ["", f"Mean best val accuracy: 1 process {statistics.mean(acc[1]):.1%} (spread "
              f"{max(acc[1]) - min(acc[1]):.1%}), 2 processes {statistics.mean(acc[2]):.1%} (spread "
              f"{max(acc[2]) - min(acc[2]):.1%}). Seconds per epoch: 1 process {sec[1]:.2f}, 2 processes {sec[2]:.2f}."]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"ddp-accuracy-{stamp}.md").write_text("\n".join(lines) + "\n")
    (a.out / f"ddp-accuracy-{stamp}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1,
                                                                  default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
