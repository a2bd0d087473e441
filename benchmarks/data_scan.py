"""The validity scan of a folder of many small files (default 20,000 JPEG/PNG of 64 px in 4 class
folders): the first run (every file decoded, in parallel processes) against a second run (the
remembered verdicts: only stats) and a third after one file changed. Each run is `tlexport.scan`
in a fresh process with the same cache folder, timed inside that process (imports excluded).
Target: the second run < 10% of the first.

Usage (an idle machine; `uptime` near 0):
    python benchmarks/data_scan.py [--files 20000] [--out benchmarks/results]
    python benchmarks/data_scan.py --smoke        # 300 files: checks that the script works
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from photos import add_common_args, machine_line, table, write_results, write_small_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
TARGET = 0.10

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from tlexport.data.folders import scan
from tlexport.data.preprocess import Preprocess
calls = []
t = time.perf_counter()
s = scan({data!r}, check_size=Preprocess().check_size, progress=lambda d, n: calls.append(d))
print(json.dumps({{"seconds": time.perf_counter() - t, "decoded": calls[-1] if calls else 0,
                   "remembered": s.remembered, "good": len(s.train) + len(s.val), "skipped": len(s.skipped)}}))
"""


def run_scan(data: Path, cache: Path) -> dict:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "TLEXPORT_CACHE_DIR": str(cache)}
    p = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), data=str(data))], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    add_common_args(ap, "tlexport-data-scan", HERE / "results")  # --smoke: 300 files
    a = ap.parse_args(argv)
    if a.smoke:
        a.files, a.work = 300, a.work.with_name(a.work.name + "-smoke")
        a.out = a.work / "out"
    from tlexport.envinfo import environment

    data = a.work / f"small-{a.files}"
    if not (a.work / f".complete-{a.files}").is_file():
        shutil.rmtree(data, ignore_errors=True)
        write_small_files(data, a.files)
        (a.work / f".complete-{a.files}").write_text("")
    cache = a.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = environment()
    first = run_scan(data, cache)
    second = run_scan(data, cache)
    changed = next(iter(sorted((data / "a").iterdir())))
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")  # one file changes
    third = run_scan(data, cache)
    runs = {"first": first, "second": second, "after one change": third}
    ratio = second["seconds"] / first["seconds"]
    result = {"files": a.files, "runs": runs, "second_vs_first": round(ratio, 4), "target": TARGET,
              "environment": env, "load_after": environment().get("load_average"),
              "memory_bytes": sum(f.stat().st_size for f in (cache / "scan").iterdir())}
    lines = [f"# The validity scan, first vs remembered ({time.strftime('%Y-%m-%d')}"
             f"{', SMOKE: not a measurement' if a.smoke else ''})", "",
             f"`python benchmarks/data_scan.py --files {a.files}` — {a.files} files of 64 px (3/4 JPEG, 1/4 PNG) in "
             f"4 class folders; the remembered scan is {result['memory_bytes'] / 1e6:.1f} MB.", "",
             machine_line(env, result["load_after"]), ""]
    lines += table(["run", "seconds", "files decoded", "verdicts remembered"],
                   [[name, f"{r['seconds']:.2f}", r["decoded"], r["remembered"]] for name, r in runs.items()])
    lines += ["", f"Second run / first: {ratio:.1%} (target < {TARGET:.0%})."]
    write_results(a.out, "data-scan", result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
