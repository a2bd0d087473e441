"""Per-image parity of every format that has an aarch64 runtime, run in an emulated arm64 root
(benchmarks/arm64_root.sh) through `--on 'cmd:sh benchmarks/arm64_python.sh ROOT'`, next to the
same parity on this x86 host, plus the two checks parity itself does not cover:

- model.uint8.onnx (preprocessing in the graph): the same decoded uint8 images through the same
  file on this host's onnxruntime and on the target's, compared with the fp32 gates;
- an .ort exported with --ort-target amd64: must be refused on ARM, naming the NCHWc layout.

    sudo python benchmarks/arm64_parity.py EXPORT_DIR AMD64_ORT_EXPORT_DIR [--root /work/arm64root]

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
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("amd64_export_dir", type=Path)
    ap.add_argument("--root", type=Path, default=Path("/work/arm64root"))
    ap.add_argument("--max-images", type=int, default=24)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    on = f"cmd:sh {HERE / 'arm64_python.sh'} {a.root}#timeout=5400"
    from tlexport.envinfo import environment
    from tlexport.remote.verify import parity_on
    from tlexport.verify.parity import parity

    t0 = time.time()
    arm = parity_on(on, a.export_dir, max_images=a.max_images)
    t_arm = time.time() - t0
    x86 = parity(a.export_dir, max_images=a.max_images, runtimes=["onnxruntime", "litert", "ncnn", "openvino"])
    baked = baked_check(on, a.export_dir, a.max_images)
    amd64 = amd64_ort_check(on, a.amd64_export_dir)
    record = {"date": time.strftime("%Y-%m-%d"), "host": environment(), "target": arm.environment["target"],
              "images": arm.images, "source": arm.source, "seconds_emulated": t_arm,
              "arm64": arm.to_dict()["results"], "x86": x86.to_dict()["results"],
              "baked_uint8": baked, "ort_amd64_on_arm": amd64, "arm64_passed": arm.passed}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"arm64-parity-{record['date']}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(stem.with_suffix(".md").read_text())
    return 0


def baked_check(on: str, export_dir: Path, max_images: int) -> dict:
    """model.uint8.onnx on the target vs the same file on this host, on the same decoded images."""
    import onnxruntime as ort

    from tlexport.data.images import load_rgb
    from tlexport.models import load_run
    from tlexport.remote.run import run_agent
    from tlexport.remote.target import parse
    from tlexport.remote.verify import decode
    from tlexport.tables.artifacts import find_run_dir
    from tlexport.verify.compare import compare, gates_for

    path = export_dir / "model.uint8.onnx"
    if not path.is_file():
        return {"skipped": "no model.uint8.onnx in the export (--bake-preprocess)"}
    run = load_run(find_run_dir(export_dir))
    samples = run.samples("val")[:max_images]
    images = [np.asarray(load_rgb(p)) for p, _ in samples]
    if len({im.shape for im in images}) != 1:
        return {"skipped": "val images of different sizes (the check stacks them)"}
    x = np.stack(images)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    host = np.concatenate([sess.run(None, {name: im})[0] for im in images]).astype(np.float32)
    item = {"file": path.name, "format": "onnx", "precision": "fp32", "runtime": "onnxruntime"}
    agent = run_agent(parse(on), {"mode": "parity", "items": [item], "batch_size": 1}, x.astype(np.float32),
                      {path.name: path})
    res = agent.results[0]
    if res.get("error") or res.get("skipped"):
        return {"error": res.get("error") or res.get("skipped")}
    out = compare(host, decode(res["logits"]), None, [str(p) for p, _ in samples], "fp32",
                  gates_for("fp32"), classes=run.classes, runtime="onnxruntime")
    return {"file": path.name, "reference": "this host's onnxruntime, same file, same decoded images",
            "passed": out.passed, "max_abs": out.max_abs, "top1_agreement": out.top1_agreement,
            "failures": out.failures}


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
    x86 = {(r["runtime"], r["precision"], Path(r.get("artifact") or "").name): r for r in rec["x86"]}
    lines = [f"# Parity on emulated arm64 — {rec['date']}", "",
             f"Target: {t.get('machine')} (qemu-user: {t.get('emulated_why') or 'declared'}), {t.get('os')}, "
             f"Python {t.get('python')}; " + ", ".join(f"{k} {v}" for k, v in (t.get('versions') or {}).items()),
             f"Host: {h.get('cpu') or h.get('cpu_model')}; the reference is torch-eager fp32 here, the same "
             f"{rec['images']} preprocessed images ({rec['source']}) shipped as float32 tensors.",
             f"Emulated run: {rec['seconds_emulated']:.0f} s wall — emulated, not a speed.", "",
             "| file | runtime | precision | arm64 max abs | arm64 top-1 % | arm64 | x86 max abs | x86 top-1 % | x86 | why |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["arm64"]:
        name = Path(r.get("artifact") or "").name
        other = x86.get((r["runtime"], r["precision"], name), {})
        why = r.get("skipped_reason") or "; ".join(r.get("failures") or [])
        lines.append(f"| {name} | {r['runtime']} | {r['precision']} | {_row(r)} | {_row(other) if other else ' | | '} | {why} |")
    b, o = rec["baked_uint8"], rec["ort_amd64_on_arm"]
    lines += ["", "## model.uint8.onnx (preprocessing in the graph)", "",
              f"```\n{json.dumps(b, indent=1, default=str)}\n```", "",
              "## .ort with the amd64 (NCHWc) layout on ARM", "", f"```\n{json.dumps(o, indent=1)}\n```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
