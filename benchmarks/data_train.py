"""Training images/s from phone photos (4032x3024 JPEGs of ~4 MB, a third stored sideways with
an EXIF orientation) against training from the same images pre-resized to 256 px, epochs 2 on
(the first fills the image cache). Target: >= 80% of the pre-resized rate.

Arms, each a whole `tlexport.train` run in this process, same options, same seed:
- photos, --data-cache disk (the default): epoch 1 decodes at the smallest JPEG scale and keeps
  each image at the augmentation's side; later epochs read the cache
- photos, --data-cache off: every epoch decodes (at the reduced scale)
- pre-resized 256 px copies, --data-cache off: the classic setup of shrinking a dataset first
- pre-resized 256 px copies, --data-cache disk
A fresh cache folder per arm, so the first epoch really fills it.

Usage (an idle machine; `uptime` near 0):
    python benchmarks/data_train.py [--per-class 48] [--epochs 3] [--arch resnet18] [--image-size 224] [--out benchmarks/results]
    python benchmarks/data_train.py --smoke        # tiny sizes: checks that the script works
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from photos import add_common_args, machine_line, photo_folder, pre_resized_copy, table, write_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
TARGET = 0.8


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=48, help="photos per class (2 classes)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, help="loader processes (default: tlexport's choice)")
    add_common_args(ap, "tlexport-data-train", HERE / "results")  # --smoke: 2 x 4 photos of 640x480, 2 epochs, 32 px
    a = ap.parse_args(argv)
    if a.smoke:
        a.per_class, a.epochs, a.image_size, a.photo_size, a.batch_size = 4, 2, 32, "640x480", 4
        a.work = a.work.with_name(a.work.name + "-smoke")
        a.out = a.work / "out"
    a.size = tuple(int(v) for v in a.photo_size.split("x"))
    return a


def make_data(a) -> tuple[Path, Path, dict]:
    photos, info = photo_folder(a.work / f"photos-{a.photo_size}-{a.per_class}", per_class=a.per_class, size=a.size)
    small = a.work / f"resized256-{a.photo_size}-{a.per_class}"
    if not (small / ".complete").is_file():
        pre_resized_copy(photos, small, 256)
        (small / ".complete").write_text("{}")
    return photos, small, info


def run_arm(a, name: str, data: Path, cache: str) -> dict:
    from tlexport import TrainConfig, train

    cache_dir = a.work / "cache" / name.replace(" ", "_").replace(",", "")
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.environ["TLEXPORT_CACHE_DIR"] = str(cache_dir)  # fresh: epoch 1 fills, the scan decodes
    out = a.work / "runs" / f"{name.replace(' ', '_').replace(',', '')}-{int(time.time())}"
    cfg = TrainConfig(data=str(data), arch=a.arch, weights="none", epochs=a.epochs, batch_size=a.batch_size,
                      image_size=a.image_size, workers=a.workers, out=str(out), data_cache=cache, seed=0)
    t0 = time.perf_counter()
    result = train(cfg)
    rates = [h.images_per_s for h in result.history]
    return {"arm": name, "data_cache": cache, "seconds": round(time.perf_counter() - t0, 1),
            "epoch_images_per_s": [round(r, 2) for r in rates], "epoch_seconds": [round(h.seconds, 1) for h in result.history],
            "images_per_s_epoch2_on": round(statistics.mean(rates[1:]), 2) if len(rates) > 1 else None,
            "cache_bytes": sum(f.stat().st_size for f in (cache_dir / "images").rglob("*") if f.is_file())
            if (cache_dir / "images").is_dir() else 0}


def main(argv=None) -> int:
    a = parse(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    from tlexport.envinfo import environment

    photos, small, info = make_data(a)
    env = environment()
    plan = [("photos, cache disk", photos, "disk"), ("photos, cache off", photos, "off"),
            ("pre-resized 256, cache off", small, "off"), ("pre-resized 256, cache disk", small, "disk")]
    rows = []
    for name, data, cache in plan:
        rows.append(run_arm(a, name, data, cache))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[2]["images_per_s_epoch2_on"]
    for r in rows:
        r["vs_pre_resized"] = round(r["images_per_s_epoch2_on"] / base, 3) if base and r["images_per_s_epoch2_on"] else None
    result = {"rows": rows, "target": TARGET, "photos": info, "environment": env,
              "load_after": environment().get("load_average")}
    write_results(a.out, "data-train", result, markdown(a, result))
    return 0


def markdown(a, result: dict) -> str:
    env, info = result["environment"], result["photos"]
    lines = [f"# Training from phone photos vs pre-resized copies ({time.strftime('%Y-%m-%d')}"
             f"{', SMOKE: not a measurement' if a.smoke else ''})", "",
             f"`python benchmarks/data_train.py --per-class {a.per_class} --epochs {a.epochs} --arch {a.arch} "
             f"--image-size {a.image_size}` — {a.arch} from scratch, batch {a.batch_size}, {info['files']} JPEGs of "
             f"{a.photo_size} ({info['mean_bytes'] / 1e6:.1f} MB mean), 20% validate.", "",
             machine_line(env, result["load_after"]), ""]
    lines += table(["arm", "img/s per epoch", "img/s epochs 2+", "vs pre-resized (cache off)", "cache MB", "run s"],
                   [[r["arm"], ", ".join(map(str, r["epoch_images_per_s"])), r["images_per_s_epoch2_on"],
                     r["vs_pre_resized"], f"{r['cache_bytes'] / 1e6:.1f}", r["seconds"]] for r in result["rows"]])
    lines += ["", f"Target: photos with the cache >= {TARGET:.0%} of the pre-resized rate, epochs 2 on."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
