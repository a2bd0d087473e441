"""Does decoding JPEGs at a reduced DCT scale cost accuracy? The same training on generated
phone photos (4032x3024, ~4 MB, a third stored sideways with an EXIF orientation; small,
low-contrast shapes so the task depends on detail) with every JPEG decoded at full size
(`images.DCT_SCALING = False`, tlexport before issue 21) and at the smallest DCT scale that keeps
what each step needs (the default), several seeds each, so the difference can be read against
the seed-to-seed noise. Both arms train and validate with their own decode (as train and serve
do); each trained model is also evaluated with the other decode, to show how many val images
change their top-1 when an app decodes differently from training.

Usage (an idle machine; `uptime` near 0):
    python benchmarks/decode_accuracy.py [--seeds 0,1,2] [--epochs 10] [--per-class 60] [--out benchmarks/results]
    python benchmarks/decode_accuracy.py --smoke         # tiny sizes: checks that the script works
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from photos import SHAPES, add_common_args, machine_line, photo_folder, table, write_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's tlexport


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=60, help="photos per class (4 classes; 25%% validate)")
    ap.add_argument("--image-size", type=int, default=96, help="crop fed to the network")
    add_common_args(ap, "tlexport-decode-accuracy", HERE / "results")  # --smoke: 2 x 6 photos of 320x240, 1 epoch
    a = ap.parse_args(argv)
    if a.smoke:
        a.seeds, a.epochs, a.per_class, a.image_size, a.photo_size = "0", 1, 6, 32, "320x240"
        a.work, a.out = a.work.with_name(a.work.name + "-smoke"), a.work.with_name(a.work.name + "-smoke") / "out"
    a.size = tuple(int(v) for v in a.photo_size.split("x"))
    return a


def make_data(a) -> tuple[Path, dict]:
    return photo_folder(a.work / f"photos-{a.photo_size}-{a.per_class}", classes=SHAPES[:2] if a.smoke else SHAPES,
                        per_class=a.per_class, size=a.size, radius=(0.06, 0.12), contrast=40.0)


def train_arm(a, data: Path, full: bool, seed: int) -> dict:
    """One training run with the chosen decode (the flag reaches forked loader workers too)."""
    from tlexport import TrainConfig, train
    from tlexport.data import images

    images.DCT_SCALING = not full
    out = a.work / "runs" / f"{'full' if full else 'reduced'}-seed{seed}-{int(time.time())}"
    cfg = TrainConfig(data=str(data), arch="resnet18", weights="none", epochs=a.epochs, batch_size=32,
                      optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5, crop_scale=0.35,
                      val_fraction=0.25, image_size=a.image_size, seed=seed, out=str(out))
    t0 = time.perf_counter()
    result = train(cfg)
    return {"decode": "full" if full else "reduced", "seed": seed, "run_dir": str(out),
            "best_val_accuracy": result.best_val_accuracy, "final_val_accuracy": result.history[-1].val_acc,
            "seconds": round(time.perf_counter() - t0, 1),
            "epoch_seconds": [round(h.seconds, 1) for h in result.history]}


def cross_decode(run_dir: str) -> dict:
    """The run's best weights on its val images with each decode: accuracy, and the share of
    images whose top-1 is the same under both."""
    import torch

    from tlexport.data import images
    from tlexport.models import load_run

    run = load_run(run_dir)
    model = run.load_model().eval()
    samples = run.samples("val")
    preds = {}
    for scaling in (True, False):
        images.DCT_SCALING = scaling
        tf = run.preprocess.eval_transform()
        with torch.inference_mode():
            x = torch.stack([tf.finish(tf.prepare(p)) for p, _ in samples])
            preds[scaling] = model(x).argmax(1)
    labels = torch.tensor([y for _, y in samples])
    images.DCT_SCALING = True
    return {"val_images": len(samples), "acc_reduced_decode": float((preds[True] == labels).float().mean()),
            "acc_full_decode": float((preds[False] == labels).float().mean()),
            "top1_same": float((preds[True] == preds[False]).float().mean())}


def report(a, rows: list[dict], env: dict, data_info: dict) -> str:
    stamp = time.strftime("%Y-%m-%d")
    lines = [f"# Full vs reduced JPEG decoding: accuracy ({stamp}{', SMOKE: not a measurement' if a.smoke else ''})", "",
             f"`python benchmarks/decode_accuracy.py --seeds {a.seeds} --epochs {a.epochs} --per-class {a.per_class} "
             f"--image-size {a.image_size}` — resnet18 from scratch, AdamW 2e-3, batch 32, crop scale 0.35, "
             f"{data_info.get('files')} generated photos of {a.photo_size} ({data_info.get('mean_bytes', 0) / 1e6:.1f} MB "
             "mean), 25% validate.", "",
             machine_line(env, env.get("load_after")), ""]
    lines += table(["decode", "seed", "best val acc", "last val acc", "val acc, reduced decode", "val acc, full decode",
                    "top-1 same under both", "run s"],
                   [[r["decode"], r["seed"], f"{r['best_val_accuracy']:.1%}", f"{r['final_val_accuracy']:.1%}",
                     f"{r['cross']['acc_reduced_decode']:.1%}", f"{r['cross']['acc_full_decode']:.1%}",
                     f"{r['cross']['top1_same']:.1%}", r["seconds"]] for r in rows])
    by = {d: [r["best_val_accuracy"] for r in rows if r["decode"] == d] for d in ("full", "reduced")}
    spread = {d: (max(v) - min(v)) if v else 0.0 for d, v in by.items()}
    lines += ["", f"Mean best val accuracy: full {statistics.mean(by['full']):.1%}, reduced "
              f"{statistics.mean(by['reduced']):.1%} (difference {statistics.mean(by['reduced']) - statistics.mean(by['full']):+.1%}); "
              f"seed spread full {spread['full']:.1%}, reduced {spread['reduced']:.1%}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TLEXPORT_CACHE_DIR", str(a.work / "cache"))  # never the user's cache
    from tlexport.envinfo import environment

    env_before = environment()
    data, info = make_data(a)
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for full in (True, False):
            row = train_arm(a, data, full, seed)
            row["cross"] = cross_decode(row["run_dir"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    env = {**env_before, "load_after": environment().get("load_average")}
    write_results(a.out, "decode-accuracy", {"environment": env, "photos": info, "rows": rows},
                  report(a, rows, env, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
