"""README's walk ("From a folder of images to an app") on a real photo folder, typed as written.

The fenced commands are read from README.md and run one by one, with their relative paths, in a
fresh working folder where `photos/` is the photo folder (a link), `new_photos/` its `val/` folder
(or the folder itself) and `examples/` the repository's. Recorded per step: exit code, seconds and
the last lines of output; then the val accuracy (run.json, eval.json), every int8 file's agreement
with its fp32 reference (export's verification and parity.json) and how much of it is int8 (the
manifest's int8 record: its float nodes, and the quantized share where the record has one; "n/a"
where it has not). Results: benchmarks/results/readme-walk-<date>.md and .json, with the machine.

    python benchmarks/readme_walk.py [PHOTOS] [--small] [--work DIR] [--out DIR]

PHOTOS defaults to /work/data/hymenoptera_data (PyTorch's ants/bees: train/ and val/). `--small`
appends `--arch resnet18 --weights none --epochs 3` to step 1 (Click takes the last value), for a
machine without the ImageNet weights cached or without the hours resnet50 takes on a CPU. Without
it step 1 runs exactly as written (resnet50 from ImageNet weights: they must be in
$TORCH_HOME/hub/checkpoints or downloadable).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--arch", "resnet18", "--weights", "none", "--epochs", "3"]
# --every-format: after the walk, every format that can be exported here, into the same folder
# (a second export adds to the first: the manifest then lists both exports' files)
EVERY = "tlexport export runs/flowers --format all --precision fp32 --precision int8"
STEP_TIMEOUT_S = 6 * 3600


def walk_commands(readme: str) -> list[str]:
    """The command lines of the first fenced bash block after the walk's heading."""
    section = readme.split("## From a folder of images to an app", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def prepare(work: Path, photos: Path) -> None:
    """The user's folder: photos/, new_photos/ and examples/ (links: nothing is copied or written
    into the photo folder; export refuses an --out inside it anyway)."""
    work.mkdir(parents=True, exist_ok=True)
    new = photos / "val" if (photos / "val").is_dir() else photos
    for name, target in (("photos", photos), ("new_photos", new), ("examples", ROOT / "examples")):
        link = work / name
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)


def run_step(line: str, work: Path, extra: list[str]) -> dict:
    argv = shlex.split(line)
    cmd = [sys.executable, "-m", "tlexport", *argv[1:], *extra] if argv[0] == "tlexport" else [sys.executable, *argv[1:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print("$", line + (" " + " ".join(extra) if extra else ""), flush=True)
    started = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env)
        code, output = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        code, output = 124, f"timed out after {e.timeout} s"
    seconds = round(time.perf_counter() - started, 1)
    tail = [ln for ln in output.splitlines() if ln.strip() and "Removing initializer" not in ln][-15:]
    print(f"  exit {code} in {seconds} s", flush=True)
    return {"command": line, "extra": extra, "exit": code, "seconds": seconds, "tail": tail}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def int8_share(record: dict | None) -> str:
    """How much of the file is int8 and what it buys, from the manifest's int8 record
    ("21/21 layers int8 · 0.25x size · 2.31x speed"), plus the layers kept in float; "n/a" when
    the record has none of it."""
    if not isinstance(record, dict):
        return "n/a"
    parts = []
    if record.get("total"):
        parts.append(f"{record.get('quantized')}/{record['total']} layers int8")
    if record.get("size_ratio") is not None:
        parts.append(f"{record['size_ratio']:.2f}x size")
    if record.get("speedup") is not None:
        parts.append(f"{record['speedup']:.2f}x speed (timed at export)")
    if record.get("int8_real") is False:
        parts.append("neither smaller nor faster")
    if isinstance(record.get("float_nodes"), list):
        parts.append(f"{len(record['float_nodes'])} kept in float")
    return " · ".join(parts) or "n/a"


def summarize(work: Path) -> dict:
    run = work / "runs" / "flowers"
    meta = _read(run / "run.json") or {}
    evaluation = _read(run / "eval" / "eval.json") or {}
    manifest = _read(run / "export" / "manifest.json") or {}
    parity = _read(work / "parity.json") or {}
    int8 = []
    for a in manifest.get("artifacts", []):
        if a.get("precision") != "int8":
            continue
        v = a.get("verification") or {}
        int8.append({"file": a.get("file"), "format": a.get("format"), "verified": a.get("verified"),
                     "top1_agreement": v.get("top1_agreement"), "flips": v.get("flips"),
                     "int8_share": int8_share(a.get("int8")), "size_mb": round((a.get("size") or 0) / 1e6, 1)})
    for f in manifest.get("failed", []):
        if f.get("precision") == "int8":
            int8.append({"file": f.get("file"), "format": f.get("format"), "verified": False,
                         "top1_agreement": None, "flips": None, "int8_share": "n/a", "size_mb": None,
                         "failed": f.get("reason")})
    parity_int8 = [{"runtime": r.get("runtime"), "artifact": Path(r["artifact"]).name if r.get("artifact") else None,
                    "top1_agreement": r.get("top1_agreement"), "passed": r.get("passed")}
                   for r in parity.get("results", []) if r.get("precision") == "int8" and not r.get("skipped_reason")]
    return {"val_accuracy": (meta.get("metrics") or {}).get("best_val_accuracy"), "eval": {
                k: evaluation.get(k) for k in ("top1", "images") if k in evaluation},
            "arch": meta.get("arch"), "int8": int8, "parity_int8": parity_int8,
            "parity_passed": parity.get("passed"), "manifest_files": len(manifest.get("artifacts", []))}


def markdown(record: dict) -> str:
    env, s = record["environment"], record["summary"]
    flags = " ".join(f for f in env.get("cpu_flags") or [] if any(w in f for w in ("avx", "amx", "vnni", "fma")))
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    lines = [f"# README walk on {record['photos']} ({record['date']})", "",
             f"`python benchmarks/readme_walk.py {record['photos']}{' --small' if record['small'] else ''}`: "
             "README's fenced walk commands, run as written from a fresh folder (relative paths).", "",
             f"Machine: {env.get('cpu')}; {env.get('usable_cores')} usable cores; flags: {flags or 'n/a'}; "
             f"load average before: {record['load_before']}; {env.get('os')}, Python {env.get('python')}.", "",
             f"Versions: {versions}.", "", "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| `{st['command']}{' ' + ' '.join(st['extra']) if st['extra'] else ''}` | {st['exit']} | "
              f"{st['seconds']} |" for st in record["steps"]]
    lines += ["", f"Architecture {s.get('arch')}; best val accuracy {s.get('val_accuracy')}; eval {s.get('eval')}; "
              f"parity passed: {s.get('parity_passed')}; manifest files after the walk: "
              f"{record.get('files_after_walk')}, after every step: {s.get('manifest_files')}.", "", "## int8 files", "",
              "Agreement and flips are export's verification on the run's val images (the int8 gate's image set); "
              "speed ratios are export's timing on this machine.", "",
              "| file | format | verified | top-1 agreement | flips | how much is int8 | MB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['format']} | {r['verified']} | {r['top1_agreement']} | {r['flips']} | "
              f"{r['int8_share']} | {r['size_mb']} |" + (f" failed: {r['failed']}" if r.get("failed") else "")
              for r in s["int8"]]
    lines += ["", "parity, int8 rows: " + ("; ".join(f"{r['runtime']} {r['artifact']} {r['top1_agreement']} % "
                                                    f"({'pass' if r['passed'] else 'FAIL'})" for r in s["parity_int8"])
                                         or "none"), ""]
    for st in record["steps"]:
        if st["exit"] != 0:
            lines += [f"### `{st['command']}` exited {st['exit']}", "", "```", *st["tail"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="?", type=Path, default=Path("/work/data/hymenoptera_data"))
    ap.add_argument("--small", action="store_true", help="step 1 with " + " ".join(SMALL))
    ap.add_argument("--every-format", action="store_true",
                    help="then export every installed format's fp32 and int8 into the same folder: " + EVERY)
    ap.add_argument("--work", type=Path, help="working folder (default: a new temporary one, removed after)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    if not a.photos.is_dir():
        sys.exit(f"{a.photos} is not a folder of photos")
    from tlexport.envinfo import environment

    work = a.work or Path(tempfile.mkdtemp(prefix="tlexport-readme-walk-"))
    prepare(work, a.photos)
    load_before = os.getloadavg()
    steps = [run_step(line, work, SMALL if a.small and shlex.split(line)[1] == "train" else [])
             for line in walk_commands((ROOT / "README.md").read_text())]
    before = len((_read(work / "runs" / "flowers" / "export" / "manifest.json") or {}).get("artifacts", []))
    if a.every_format:
        steps.append(run_step(EVERY, work, []))
    record = {"date": time.strftime("%Y-%m-%d"), "photos": str(a.photos), "small": a.small, "work": str(work),
              "load_before": [round(x, 2) for x in load_before], "steps": steps, "summary": summarize(work),
              "files_after_walk": before,
              "environment": environment()}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"readme-walk-{record['date']}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(f"wrote {stem}.md and .json")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(st["exit"] == 0 for st in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
