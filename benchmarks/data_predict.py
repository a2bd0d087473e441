"""`tlexport predict` on a folder of phone photos (4032x3024 JPEGs of ~4 MB, a third stored
sideways with an EXIF orientation): images/s of this checkout against tlexport before issue 21
(the package as of --baseline-ref, unpacked from git into a temporary folder and run in the same
script run, same model file, same photos), plus this checkout with JPEG DCT scaling off and with
one decoding thread, which show what each part contributes. Target: >= 2.5x the baseline.

Each arm runs in a fresh process: one untimed call (page cache, onnxruntime start-up), then
--repeats timed calls of predict() over the whole folder; arms alternate (ABCD ABCD ...) so a
change of load hits all of them; the median is reported.

Usage (an idle machine; `uptime` near 0):
    python benchmarks/data_predict.py [--photos 48] [--repeats 3] [--baseline-ref 44e699d] [--out benchmarks/results]
    python benchmarks/data_predict.py --smoke        # tiny sizes: checks that the script works
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from photos import SHAPES, add_common_args, machine_line, photo_folder, table, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
BASELINE_REF = "44e699d"  # main just before the reduced decode and the decoding pool
TARGET = 2.5

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import tlexport.inference as inf
from tlexport.data import images
{setup}
kw = {kw!r}
inf.predict({model!r}, [{photos!r}], **kw)  # untimed: page cache, runtime start-up
times = []
for _ in range({repeats}):
    t = time.perf_counter()
    r = inf.predict({model!r}, [{photos!r}], **kw)
    times.append(time.perf_counter() - t)
assert not r.errors, r.errors
print(json.dumps({{"times": times, "n": len(r.results), "tlexport": inf.__file__,
                   "top1": [x["top"][0]["index"] for x in r.results]}}))
"""


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the tlexport to compare with")
    add_common_args(ap, "tlexport-data-predict", HERE / "results")  # --smoke: 8 photos of 640x480, 1 repeat
    a = ap.parse_args(argv)
    if a.smoke:
        a.photos, a.repeats, a.photo_size = 8, 1, "640x480"
        a.work = a.work.with_name(a.work.name + "-smoke")
        a.out = a.work / "out"
    a.size = tuple(int(v) for v in a.photo_size.split("x"))
    return a


def make_model(work: Path) -> Path:
    """resnet18 (random weights, 256/224 preprocessing) exported to ONNX fp32 through tlexport."""
    model = work / "export" / "model.onnx"
    if model.is_file():
        return model
    from tlexport import TrainConfig, export, train
    from tlexport.data.synth import make_dataset

    data = make_dataset(work / "shapes", classes=("circle", "square", "triangle", "star"), per_class=8, size=64)
    run = train(TrainConfig(data=str(data), arch="resnet18", weights="none", epochs=1, batch_size=8, max_steps=1,
                            image_size=224, out=str(work / "run"), data_cache="off"))
    export(run.run_dir, formats=("onnx",), precisions=("fp32",), out=work / "export", verify=False)
    return model


def baseline_tree(ref: str, into: Path) -> Path:
    """The tlexport package as of `ref`, unpacked (no worktree, nothing left in .git)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "tlexport"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def arms(a, baseline: Path) -> dict:
    kw = {"batch_size": a.batch_size, "top_k": 1}
    return {
        f"before #21 ({a.baseline_ref})": (str(baseline), "", kw),
        "this checkout": (str(REPO), "", kw),
        "this checkout, no DCT scaling": (str(REPO), "images.DCT_SCALING = False", kw),
        "this checkout, 1 decoding thread": (str(REPO), "", {**kw, "workers": 1}),
    }


def run_arm(root: str, setup: str, kw: dict, model: Path, photos: Path, repeats: int) -> dict:
    code = CHILD.format(root=root, setup=setup, kw=kw, model=str(model), photos=str(photos), repeats=repeats)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    if p.returncode != 0:
        raise RuntimeError(f"arm failed: {p.stderr.strip()[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert Path(out["tlexport"]).resolve().is_relative_to(Path(root).resolve()), out["tlexport"]  # the right code ran
    return out


def main(argv=None) -> int:
    a = parse(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TLEXPORT_CACHE_DIR", str(a.work / "cache"))
    from tlexport.envinfo import environment

    photos, info = photo_folder(a.work / f"photos-{a.photo_size}-{a.photos}", classes=SHAPES,
                                per_class=-(-a.photos // len(SHAPES)), size=a.size)
    model = make_model(a.work)
    env_before = environment()
    with tempfile.TemporaryDirectory(prefix="tlexport-baseline-") as tmp:
        plan = arms(a, baseline_tree(a.baseline_ref, Path(tmp)))
        times = {name: [] for name in plan}
        top1 = {}
        for _ in range(a.repeats):
            for name, (root, setup, kw) in plan.items():
                out = run_arm(root, setup, kw, model, photos, 1)
                times[name] += out["times"]
                top1[name] = out["top1"]
    n = info["files"]
    rows = [{"arm": name, "images": n, "seconds_median": round(statistics.median(t), 3),
             "images_per_s": round(n / statistics.median(t), 2), "seconds_all": [round(x, 3) for x in t]}
            for name, t in times.items()]
    base = rows[0]["images_per_s"]
    for r in rows:
        r["vs_baseline"] = round(r["images_per_s"] / base, 2)
    same = {name: sum(x == y for x, y in zip(t, top1[rows[0]["arm"]])) / n for name, t in top1.items()}
    result = {"rows": rows, "target_vs_baseline": TARGET, "top1_same_as_baseline": same,
              "photos": info, "environment_before": env_before, "load_after": environment().get("load_average")}
    write_results(a.out, "data-predict", result, markdown(a, result))
    return 0


def markdown(a, result: dict) -> str:
    env = result["environment_before"]
    info = result["photos"]
    lines = [f"# tlexport predict on phone photos ({time.strftime('%Y-%m-%d')}{', SMOKE: not a measurement' if a.smoke else ''})",
             "", f"`python benchmarks/data_predict.py --photos {a.photos} --repeats {a.repeats} --baseline-ref "
             f"{a.baseline_ref}` — resnet18 ONNX fp32 (256/224), batch {a.batch_size}, {info['files']} JPEGs of "
             f"{a.photo_size} ({info['mean_bytes'] / 1e6:.1f} MB mean).", "",
             machine_line(env, result["load_after"]), ""]
    lines += table(["arm", "img/s (median)", "vs before #21", "top-1 same as before"],
                   [[r["arm"], r["images_per_s"], f"{r['vs_baseline']}x", f"{result['top1_same_as_baseline'][r['arm']]:.0%}"]
                    for r in result["rows"]])
    lines += ["", f"Target: this checkout >= {TARGET}x before #21."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
