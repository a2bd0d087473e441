"""Per-image parity of every format that has an aarch64 runtime, run in an emulated arm64 root
(benchmarks/arm64_root.sh) through `--on 'cmd:sh benchmarks/arm64_python.sh ROOT'`, next to the
same parity on this x86 host, plus the check parity itself does not make: an .ort exported with
--ort-target amd64 must be refused on ARM, naming the NCHWc layout. (model.uint8.onnx, the
preprocessing in the graph, is parity's own row: the same decoded pixels through the same file on
the target and on this host's onnxruntime, under the fp32 gates.)

    sudo python benchmarks/arm64_parity.py EXPORT_DIR [EXPORT_DIR...] --amd64 AMD64_ORT_EXPORT_DIR \
        [--root /work/arm64root] [--max-images N] [--runtimes onnxruntime,litert,ncnn,openvino]

Each file's arm64 logits are also compared with the same file's logits on this host's runtime
(`vs x86`): that difference is the ARM kernels' alone, whatever the file's quantization did.

Writes benchmarks/results/arm64-parity-<date>.md and .json (timings are not measured here: the
target is emulated)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export_dirs", type=Path, nargs="+")
    ap.add_argument("--amd64", type=Path, required=True, help="an export made with --ort-target amd64")
    ap.add_argument("--root", type=Path, default=Path("/work/arm64root"))
    ap.add_argument("--max-images", type=int, default=None, help="default: every val image, as parity")
    ap.add_argument("--runtimes", default="onnxruntime,litert,ncnn,openvino")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    on = f"cmd:sh {HERE / 'arm64_python.sh'} {a.root}#timeout=5400"
    from tlexport.envinfo import environment
    from tlexport.remote.verify import parity_on
    from tlexport.verify.parity import parity

    t0, arm_rows, x86_rows, passed, target = time.time(), [], [], True, None
    runtimes = a.runtimes.split(",")
    for export_dir in a.export_dirs:
        arm = parity_on(on, export_dir, max_images=a.max_images, runtimes=runtimes)
        x86 = parity(export_dir, max_images=a.max_images, runtimes=runtimes)
        against = versus_x86(export_dir, arm, a.max_images)
        arm_rows += [{**r, "vs_x86": against.get(Path(r.get("artifact") or "").name)} for r in arm.to_dict()["results"]]
        x86_rows += x86.to_dict()["results"]
        passed, target = passed and arm.passed, arm.environment["target"]
    t_arm = time.time() - t0
    amd64 = amd64_ort_check(on, a.amd64)
    record = {"date": time.strftime("%Y-%m-%d"), "host": environment(), "target": target,
              "images": arm.images, "source": arm.source, "seconds_emulated": t_arm,
              "arm64": arm_rows, "x86": x86_rows, "ort_amd64_on_arm": amd64, "notes": arm.notes,
              "arm64_passed": passed}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"arm64-parity-{record['date']}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(stem.with_suffix(".md").read_text())
    return 0


def versus_x86(export_dir: Path, arm, max_images: int) -> dict:
    """file -> {max_abs, top1_agreement} of its arm64 logits against its logits on this host's
    runtime (the same inputs: the run's val split, as parity_on used)."""
    from tlexport import runtimes as rt
    from tlexport.models import load_run
    from tlexport.remote.verify import decode, select
    from tlexport.tables.artifacts import find_run_dir
    from tlexport.verify.parity import gather_inputs, run_all

    run = load_run(find_run_dir(export_dir))
    inputs, _ = gather_inputs(run, None, None, max_images)
    out = {}
    for item in select(export_dir)[0]:
        if item.file not in arm.target_logits:
            continue
        runtime = rt.runtime_class(item.runtime)(item.path, item.precision, "cpu").load()
        try:
            here = run_all(runtime, inputs, 16)
        finally:
            runtime.close()
        there = decode(arm.target_logits[item.file])
        out[item.file] = {"max_abs": float(np.abs(here - there).max()),
                          "top1_agreement": 100.0 * float(np.mean(here.argmax(1) == there.argmax(1)))}
    return out


def amd64_ort_check(on: str, amd64_dir: Path) -> dict:
    from tlexport.remote.run import run_agent
    from tlexport.remote.target import parse

    path = amd64_dir / "model.ort"
    if not path.is_file():
        return {"skipped": f"no {path}"}
    item = {"file": "model.ort", "format": "ort", "precision": "fp32", "runtime": "onnxruntime"}
    agent = run_agent(parse(on), {"mode": "parity", "items": [item], "batch_size": 1},
                      np.zeros((1, 3, 48, 48), np.float32), {"model.ort": path})
    res = agent.results[0]
    return {"file": str(path), "refused": bool(res.get("skipped")), "reason": res.get("skipped") or res.get("error")}


def _row(r: dict) -> str:
    def f(v, spec=".3g"):
        return "" if v is None else format(v, spec)
    state = "skipped" if r.get("skipped_reason") else ("PASS" if r.get("passed") else "FAIL")
    return f"{f(r.get('max_abs'))} | {f(r.get('top1_agreement'), '.1f')} | {state}"


def markdown(rec: dict) -> str:
    t, h = rec["target"], rec["host"]
    x86 = {(r["runtime"], r["precision"], r.get("artifact")): r for r in rec["x86"]}
    lines = [f"# Parity on emulated arm64 — {rec['date']}", "",
             f"Target: {t.get('machine')} (qemu-user: {t.get('emulated_why') or 'declared'}), {t.get('os')}, "
             f"Python {t.get('python')}; " + ", ".join(f"{k} {v}" for k, v in (t.get('versions') or {}).items()),
             f"Host: {h.get('cpu') or h.get('cpu_model')}; the reference is torch-eager fp32 here, the same "
             f"{rec['images']} preprocessed images ({rec['source']}) shipped as float32 tensors.",
             f"Emulated run: {rec['seconds_emulated']:.0f} s wall — emulated, not a speed.", "",
             "Columns: max abs logit error and top-1 agreement against torch-eager fp32 (the parity gates), on "
             "arm64 and on x86; then arm64 against the same file on x86's runtime (the ARM kernels alone).", "",
             "| file | runtime | precision | arm64 max abs | arm64 top-1 % | arm64 | x86 max abs | x86 top-1 % | x86 "
             "| arm64 vs x86 max abs | arm64 vs x86 top-1 % | why |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["arm64"]:
        name = Path(r.get("artifact") or "").name
        other = x86.get((r["runtime"], r["precision"], r.get("artifact")), {})
        why = r.get("skipped_reason") or "; ".join(r.get("failures") or [])
        vs = r.get("vs_x86") or {}
        if name.endswith(".uint8.onnx"):  # parity's own reference for it is this host's onnxruntime
            vs = {"max_abs": r.get("max_abs"), "top1_agreement": r.get("top1_agreement")} if r.get("max_abs") is not None else {}
            why = why or "decoded pixels in; reference: this host's onnxruntime, same file and pixels"
        vs_cells = f"{vs['max_abs']:.3g} | {vs['top1_agreement']:.1f}" if vs else " | "
        lines.append(f"| {name} | {r['runtime']} | {r['precision']} | {_row(r)} | {_row(other) if other else ' | | '} "
                     f"| {vs_cells} | {why} |")
    o = rec["ort_amd64_on_arm"]
    lines += ["", "Parity's notes:", "", *[f"- {n}" for n in rec.get("notes", [])], "",
              "## .ort with the amd64 (NCHWc) layout on ARM", "", f"```\n{json.dumps(o, indent=1)}\n```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
