"""Does bf16 autocast on the CPU cost accuracy? The quickstart recipe (resnet18, 4 generated shapes,
48 px, AdamW) trained with `--precision fp32` and `--precision bf16`, each with several seeds, so the
difference can be read against the seed-to-seed noise. Also records each run's epoch seconds.

Usage (an idle machine; a CPU with AVX-512 BF16 or AMX makes bf16 fast, elsewhere it only emulates):
    python benchmarks/precision_accuracy.py [--seeds 0,1] [--epochs 12] [--data DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--data", type=Path, help="image folder (default: the quickstart's generated shapes)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tlexport-precision-accuracy"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()

    from tlexport import TrainConfig, train
    from tlexport.data.synth import make_dataset
    from tlexport.envinfo import environment

    data = a.data
    if data is None:
        data = a.work / "data"
        if not data.exists():
            make_dataset(data, classes=("circle", "square", "triangle", "star"), per_class=150, size=64, seed=0)
    rows = []
    for precision in ("fp32", "bf16"):
        for seed in [int(s) for s in a.seeds.split(",")]:
            out = a.work / f"{precision}-seed{seed}-{int(time.time())}"
            cfg = TrainConfig(data=str(data), arch="resnet18", weights="none", epochs=a.epochs, batch_size=32,
                              optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5, crop_scale=0.35,
                              val_fraction=0.2, image_size=48, seed=seed, precision=precision, out=str(out))
            t0 = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - t0
            run = json.loads((out / "run.json").read_text())
            rows.append({"precision": precision, "seed": seed, "best_val_accuracy": result.best_val_accuracy,
                         "final_val_accuracy": result.history[-1].val_acc, "seconds": round(seconds, 1),
                         "train_img_s": round(statistics.mean(h.images_per_s for h in result.history[1:]), 1),
                         "mixed_precision": run.get("mixed_precision"), "why": run.get("precision_reason")})
            print(rows[-1], flush=True)
    env = environment()
    stamp = time.strftime("%Y-%m-%d")
    lines = [f"# bf16 autocast vs fp32 on the CPU: accuracy and speed ({stamp})", "",
             f"`python benchmarks/precision_accuracy.py --seeds {a.seeds} --epochs {a.epochs}` — the quickstart "
             "recipe (resnet18 from scratch, 4 shapes x 150 images, 48 px, AdamW 2e-3, batch 32).", "",
             f"CPU: {env.get('cpu')}; flags: {' '.join(f for f in env.get('cpu_flags', []) if 'bf16' in f or 'amx' in f)}; "
             f"usable cores {env.get('usable_cores')}.", "",
             "| precision | seed | best val acc | last val acc | train img/s (epochs 2+) | run s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['seed']} | {r['best_val_accuracy']:.1%} | {r['final_val_accuracy']:.1%} | "
                     f"{r['train_img_s']} | {r['seconds']} |")
    by = {p: [r["best_val_accuracy"] for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
    speed = {p: statistics.mean(r["train_img_s"] for r in rows if r["precision"] == p) for p in ("fp32", "bf16")}
    lines += ["", f"Mean best val accuracy: fp32 {statistics.mean(by['fp32']):.1%}, bf16 {statistics.mean(by['bf16']):.1%}; "
              f"seed spread fp32 {max(by['fp32']) - min(by['fp32']):.1%}, bf16 {max(by['bf16']) - min(by['bf16']):.1%}. "
              f"Training speed bf16/fp32: {speed['bf16'] / speed['fp32']:.2f}x."]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"precision-accuracy-{stamp}.md").write_text("\n".join(lines) + "\n")
    (a.out / f"precision-accuracy-{stamp}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1,
                                                                       default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
