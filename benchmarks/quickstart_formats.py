"""Every export format on a trained model: the quickstart's resnet18 (shapes, a few epochs), exported
to every format tlexport writes, fp32 and int8, each verified by export itself, then
`tlexport parity --trust-code` over all of them on the run's real val images.

The gates are parity's (fp32: every logit within the architecture's atol/rtol and 100% top-1;
int8: >= 98% top-1 agreement and, with labels, <= 1 point of accuracy lost). The export folder,
parity JSON and a Markdown summary with the CPU flags land in benchmarks/results/.

Usage (an idle machine; the edge formats need the edge extra, see README):
    python benchmarks/quickstart_formats.py [--run RUN_DIR] [--work DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FORMATS = ("onnx", "torchscript", "pt2", "openvino", "executorch", "tflite", "ort", "triton")


def tlexport(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tlexport", *map(str, args)]
    print("$", " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a trained run (default: run `tlexport quickstart` first)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tlexport-quickstart-formats"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()

    from tlexport.envinfo import environment

    a.work.mkdir(parents=True, exist_ok=True)
    run = a.run
    if run is None:
        r = tlexport("quickstart", "--out", a.work / "quickstart")
        if r.returncode:
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
        run = a.work / "quickstart" / "run"
    export_dir = a.work / "export-all"
    t0 = time.perf_counter()
    r = tlexport("export", run, "--format", ",".join(FORMATS), "--precision", "fp32,int8", "--out", export_dir,
                 "--json")
    export_s = time.perf_counter() - t0
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
        return 1
    exported = json.loads(r.stdout)
    parity_json = a.work / "parity.json"
    parity_md = a.work / "parity.md"
    p = tlexport("parity", export_dir, "--trust-code", "--json", parity_json, "--markdown", parity_md)
    report = json.loads(parity_json.read_text())

    env = environment()
    stamp = time.strftime("%Y-%m-%d")
    lines = [
        f"# Every format on the quickstart model ({stamp})",
        "",
        f"`python benchmarks/quickstart_formats.py` — resnet18 trained by `tlexport quickstart` "
        f"({json.loads((Path(run) / 'run.json').read_text())['metrics']}), exported to {', '.join(FORMATS)} "
        f"in fp32 and int8 in {export_s:.0f} s with export's own verification, then `tlexport parity "
        f"--trust-code` on the run's val images. parity exit code: {p.returncode}.",
        "",
        f"CPU: {env.get('cpu')}; flags: {' '.join(f for f in env.get('cpu_flags', []) if 'avx' in f or 'amx' in f or 'vnni' in f)}; "
        f"usable cores {env.get('usable_cores')}; load average before {env.get('load_average')}.",
        "",
        "## Export: artifacts and their own verification",
        "",
        "| file | format | precision | MB | verified | top-1 vs eager | int8 float nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    for art in exported["artifacts"]:
        v = art.get("verification") or {}
        size = (art["size"] + sum(c.get("size", 0) for c in art.get("companions", []))) / 1e6
        floats = ", ".join((art.get("int8") or {}).get("float_nodes", [])) if art.get("int8") else ""
        agree = v.get("top1_agreement")
        lines.append(f"| {art['file']} | {art['format']} | {art['precision']} | {size:.1f} | {art.get('verified')} | "
                     f"{'' if agree is None else f'{agree:.1%}'} | {floats} |")
    lines += ["", "## Parity (all artifacts, one run)", "", parity_md.read_text()]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"quickstart-formats-{stamp}.md").write_text("\n".join(lines) + "\n")
    (a.out / f"quickstart-formats-{stamp}.json").write_text(json.dumps(
        {"environment": env, "export": exported, "parity": report, "export_seconds": export_s}, indent=1, default=str))
    print(f"wrote {a.out}/quickstart-formats-{stamp}.md (parity {'PASS' if report['passed'] else 'FAIL'})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
