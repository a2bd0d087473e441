"""Compatibility benchmark: do tlexport's default exports load, and agree, in the runtimes apps
ship? Real older runtimes from the registries, each in a throwaway environment:

- every onnxruntime minor release from 1.15 to the newest (venvs under --cache; this machine's own
  onnxruntime is the "fresh" reference);
- onnxruntime-node and onnxruntime-web (its wasm backend, under Node) 1.14 ... 1.30 from npm
  (`npm install --ignore-scripts`);
- OpenCV's DNN (opencv-python-headless 4.8, 4.10, 4.14, 5.0) for the `.onnx` files;
- tflite-runtime 2.14.0 for the `.tflite` files (LiteRT here is the fresh reference).

It trains a tiny run on generated photo-like images (or takes --run), exports it as a user would
(`tlexport export RUN --precision fp32,int8 --bake-preprocess --format onnx,ort[,tflite]`, default
opset), runs every file on the val images (and the in-graph preprocessing model on decoded photos
of varied sizes) in every runtime, and compares each with the fresh runtime on the same file:
fp32 max abs <= 1e-4 and 100 % top-1, int8 >= 98 % top-1. It also probes each runtime's newest
ai.onnx opset and IR version with one-node models. Results: benchmarks/results/compat-DATE.md/.json;
`tlexport/formats/onnx/compat.py` holds the table the manifest's minimum versions come from, and
`tests/test_compat.py` holds it equal to the newest result here.

Not a timing benchmark (every runtime runs single-threaded, only outputs are compared): it can
run on a busy machine. The first run installs the environments (minutes); later runs reuse them.

    PYTHONPATH=. python benchmarks/compat.py [--cache /tmp/tlexport-compat] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def _version(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(" ")[0].split("."))


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


# Every onnxruntime minor release from 1.15 (1.14, the first with opset 18, has no wheel for
# Python 3.11) to the one before this machine's (the fresh reference), at its last patch; numpy
# 1.x where the wheel was built for it.
ORT_VERSIONS = ("1.15.1", "1.16.3", "1.17.3", "1.18.1", "1.19.2", "1.20.1", "1.21.1", "1.22.1",
                "1.23.2", "1.24.4", "1.25.1", "1.26.0", "1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.1")
PY_ENVS = [  # (runtime, version, pip requirements)
    *(("onnxruntime", v, [f"onnxruntime=={v}", "numpy<2" if _minor(v) < (1, 19) else "numpy"]) for v in ORT_VERSIONS),
    ("opencv", "4.8.1", ["opencv-python-headless==4.8.1.78", "numpy<2"]),
    ("opencv", "4.10.0", ["opencv-python-headless==4.10.0.84", "numpy<2"]),
    ("opencv", "4.14.0", ["opencv-python-headless==4.14.0.94", "numpy"]),
    ("opencv", "5.0.0", ["opencv-python-headless==5.0.0.93", "numpy"]),
    ("tflite-runtime", "2.14.0", ["tflite-runtime==2.14.0", "numpy<2"]),
]
NPM_VERSIONS = ("1.14.0", "1.15.1", "1.16.3", "1.17.3", "1.18.0", "1.19.2", "1.20.1", "1.21.1", "1.22.0", "1.23.2",
                "1.24.3", "1.25.1", "1.26.0", "1.27.0", "1.29.0", "1.30.0")
NPM_PACKAGES = ("onnxruntime-node", "onnxruntime-web")
SIZES = ((37, 501), (640, 480), (1000, 333), (3000, 2000), (20, 30))  # (w, h) of decoded photos
ONNX_FILES = ("model.onnx", "model.int8.onnx", "model.uint8.onnx")
ORT_FILES = ("model.ort", "model.int8.ort")
TFLITE_FILES = ("model.tflite", "model.int8.tflite")
FP32_ATOL, INT8_TOP1 = 1e-4, 0.98


# ---- environments --------------------------------------------------------------------------------
def py_env(cache: Path, runtime: str, version: str, reqs: list[str]) -> Path | None:
    """The python of a cached venv holding `reqs` (made now if missing); None if pip fails."""
    env = cache / f"{runtime}-{version}"
    python = env / "bin" / "python"
    if (env / ".done").is_file() and python.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
    if subprocess.run([str(python), "-m", "pip", "install", "-q", *reqs]).returncode != 0:
        return None
    (env / ".done").touch()
    return python


def npm_env(cache: Path, package: str, version: str) -> Path | None:
    """The package folder of `package@version` installed with --ignore-scripts (its install
    script would download GPU binaries from outside the registry); None if npm fails."""
    env = cache / f"npm-{package}-{version}"
    pkg = env / "node_modules" / package
    if (env / ".done").is_file() and pkg.is_dir():
        return pkg
    env.mkdir(parents=True, exist_ok=True)
    (env / "package.json").write_text('{"name": "probe", "private": true}')
    cmd = ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", f"{package}@{version}"]
    if subprocess.run(cmd, cwd=env, capture_output=True).returncode != 0:
        return None
    (env / ".done").touch()
    return pkg


# ---- the run, its export and the inputs ------------------------------------------------------------
def train_run(work: Path) -> Path:
    """A tiny resnet18 trained from scratch on generated photo-like images (64 px)."""
    from tlexport.data.synth import make_dataset

    data = make_dataset(work / "data", per_class=40, val_per_class=12, size=64, split=True)
    run = work / "run"
    cmd = [sys.executable, "-m", "tlexport", "train", "--data", str(data), "--arch", "resnet18", "--weights", "none",
           "--epochs", "6", "--lr", "0.01", "--image-size", "64", "--batch-size", "16", "--out", str(run),
           "--overwrite", "--quiet", "--device", "cpu"]
    subprocess.run(cmd, check=True, env=_env())
    return run


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def export(run: Path, out: Path, formats: str) -> dict:
    cmd = [sys.executable, "-m", "tlexport", "export", str(run), "--out", str(out), "--format", formats,
           "--precision", "fp32,int8", "--bake-preprocess", "--calib-size", "64", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"export failed: {done.stderr.strip()[-500:]}")
    return json.loads((out / "manifest.json").read_text())


def photos(classes, size: int = 480) -> list:
    """Decoded photo-like RGB images of each class at SIZES (tall, wide, huge, smaller than the crop)."""
    import random

    from PIL import Image

    from tlexport.data.synth import draw_shape

    rng, out = random.Random(7), []
    for i, (w, h) in enumerate(SIZES * 2):
        scene = draw_shape(classes[i % len(classes)], size, rng)
        out.append(np.asarray(scene.resize((w, h), Image.BICUBIC)))
    return out


def write_inputs(run: Path, work: Path) -> dict:
    """The val images preprocessed by tlexport (float32 NCHW) and decoded photos (uint8 HWC), as raw
    files both workers read."""
    from tlexport.models import load_run

    r = load_run(run)
    vals = [r.preprocess.to_array(r.preprocess.load(p)) for p, _ in r.samples("val")]
    floats = np.stack(vals).astype(np.float32)
    (work / "floats.f32").write_bytes(floats.tobytes())
    images = [np.asarray(r.preprocess.load(p)) for p, _ in r.samples("val")[:8]] + photos(r.classes)
    entries = []
    for i, img in enumerate(images):
        f = work / f"image{i}.u8"
        f.write_bytes(np.ascontiguousarray(img, np.uint8).tobytes())
        entries.append({"file": str(f), "shape": list(img.shape)})
    return {"floats": {"file": str(work / "floats.f32"), "shape": list(floats.shape)}, "images": entries}


def probes(work: Path) -> list[dict]:
    """One-node models: every ai.onnx opset from 17 (at its oldest IR), then IR versions at opset 18."""
    import onnx
    from onnx import TensorProto, helper

    from tlexport.formats.onnx.graph import min_ir_for_opset

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    pairs = [(v, min_ir_for_opset(v)) for v in range(17, onnx.defs.onnx_opset_version() + 1)]
    pairs += [(18, ir) for ir in range(8, onnx.IR_VERSION + 1)]
    out = []
    for opset, ir in dict.fromkeys(pairs):
        f = work / f"probe-op{opset}-ir{ir}.onnx"
        f.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                        ir_version=ir).SerializeToString())
        out.append({"file": str(f), "opset": opset, "ir": ir})
    return out


# ---- running the workers -------------------------------------------------------------------------
def job_for(files: tuple, export_dir: Path, inputs: dict, out: Path, with_probes: list) -> Path:
    models = [{"name": f, "path": str(export_dir / f), "input": "images" if f == "model.uint8.onnx" else "floats"}
              for f in files if (export_dir / f).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job.json"
    job.write_text(json.dumps({"inputs": inputs, "models": models, "probes": with_probes, "out": str(out)}))
    return job


def run_worker(cmd: list[str], label: str, timeout: int = 900) -> dict:
    """One worker's JSON line, or {"error"} when it could not start or crashed (a runtime that
    aborts on a file takes its process down: that is recorded, not fatal)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{label}: timed out after {timeout} s", "models": {}}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"{label}: exit {done.returncode} ({tail})", "models": {}}
    return json.loads(lines[-1])


def targets(cache: Path, export_dir: Path, inputs: dict, work: Path, probe_models: list, only=None) -> list[dict]:
    """[{"runtime", "version", "result"}] for every environment (of the runtimes in `only`), the
    fresh ones first."""
    worker_py, worker_js = str(ROOT / "benchmarks" / "compat_worker.py"), str(ROOT / "benchmarks" / "compat_worker.js")
    onnx_like = ONNX_FILES + ORT_FILES
    plan = [("onnxruntime", "fresh", [sys.executable, worker_py, "onnxruntime"], onnx_like, probe_models),
            ("litert", "fresh", [sys.executable, worker_py, "litert"], TFLITE_FILES, [])]
    for runtime, version, reqs in PY_ENVS:
        python = py_env(cache, runtime, version, reqs)
        files = {"onnxruntime": onnx_like, "opencv": ONNX_FILES, "tflite-runtime": TFLITE_FILES}[runtime]
        cmd = [str(python), worker_py, runtime] if python else None
        plan.append((runtime, version, cmd, files, probe_models if runtime == "onnxruntime" else []))
    for package in NPM_PACKAGES:
        for version in NPM_VERSIONS:
            pkg = npm_env(cache, package, version)
            plan.append((package, version, ["node", worker_js, str(pkg)] if pkg else None, onnx_like, probe_models))
    out = []
    for runtime, version, cmd, files, with_probes in plan:
        if only and runtime not in only:
            continue
        if cmd is None:
            out.append({"runtime": runtime, "version": version, "result": {"error": "could not install", "models": {}}})
            continue
        job = job_for(files, export_dir, inputs, work / "out" / f"{runtime}-{version}", with_probes)
        print(f"  {runtime} {version}", flush=True)
        res = run_worker([*cmd, str(job)], f"{runtime} {version}")
        out.append({"runtime": runtime, "version": res.get("version", version) if version != "fresh" else
                    f"{res.get('version', '?')} (fresh)", "result": res})
    return out


# ---- comparing -----------------------------------------------------------------------------------
def _outputs(entry: dict):
    o = entry.get("outputs")
    return None if not o else np.fromfile(o["file"], dtype=np.float32).reshape(o["shape"])


def verdict(name: str, got: dict | None, ref: dict | None) -> dict:
    """One file in one runtime against the fresh runtime on the same file."""
    if got is None:
        return {"status": "not run"}
    if got.get("error"):
        return {"status": "fails", "error": got["error"]}
    a, b = _outputs(got), _outputs(ref or {})
    if b is None:
        return {"status": "loads", "note": "no fresh reference to compare with"}
    top1 = float((a.argmax(1) == b.argmax(1)).mean())
    max_abs = float(np.abs(a - b).max())
    int8 = ".int8." in name
    ok = top1 >= INT8_TOP1 if int8 else (top1 == 1.0 and max_abs <= FP32_ATOL)
    return {"status": "agrees" if ok else "disagrees", "max_abs": max_abs, "top1": top1}


def probe_summary(result: dict) -> dict:
    loaded = [p for p in result.get("probes", []) if p["loaded"]]
    opsets = [p["opset"] for p in loaded if p["opset"] != 18 or p["ir"] == 8]
    irs = [p["ir"] for p in loaded if p["opset"] == 18]
    return {"max_opset": max(opsets, default=None), "max_ir": max(irs, default=None)}


def compare(rows: list[dict]) -> list[dict]:
    fresh = {r["runtime"]: r["result"]["models"] for r in rows if "fresh" in r["version"]}
    out = []
    for r in rows:
        res = r["result"]
        ref = fresh.get("litert" if r["runtime"] in ("litert", "tflite-runtime") else "onnxruntime", {})
        files = {name: verdict(name, got, ref.get(name)) for name, got in res.get("models", {}).items()}
        out.append({"runtime": r["runtime"], "version": r["version"], "error": res.get("error"),
                    **probe_summary(res), "files": files})
    return out


# ---- the report ----------------------------------------------------------------------------------
COLUMNS = ONNX_FILES + ORT_FILES + TFLITE_FILES


def _cell(v: dict | None) -> str:
    if v is None:
        return "-"
    if v["status"] == "agrees":
        return f"yes ({v['max_abs']:.1e}, top-1 {100 * v['top1']:.0f} %)"
    if v["status"] == "disagrees":
        return f"DISAGREES ({v['max_abs']:.1e}, top-1 {100 * v['top1']:.1f} %)"
    if v["status"] == "loads":
        return "loads"
    return "no: " + v.get("error", v["status"]).replace("|", "/")[:90]


def file_facts(export_dir: Path, manifest: dict) -> list[dict]:
    from tlexport.formats.onnx.compat import describe

    return [{"file": a["file"], **describe(export_dir / a["file"])} for a in manifest["artifacts"]]


def report(rows: list[dict], facts: list[dict], meta: dict) -> str:
    lines = [f"# Runtime compatibility of a default export ({meta['date']})", "",
             f"Run: {meta['run']}. Export: `{meta['export']}`. Every file runs single-threaded on "
             f"{meta['floats']} val images (the in-graph preprocessing model on {meta['images']} decoded images "
             f"of sizes {', '.join(f'{w}x{h}' for w, h in SIZES)} and the val images' own size) and is compared "
             f"with the fresh runtime on the same file: fp32 max abs <= {FP32_ATOL:g} and 100 % top-1, int8 "
             f">= {100 * INT8_TOP1:.0f} % top-1. onnxruntime-web runs its wasm backend under Node "
             f"{meta['node']}. Machine: {meta['machine']}.", "", "Files:", ""]
    lines += [f"- `{f['file']}`: " + ", ".join(f"{k} {v}" for k, v in f.items() if k != "file") for f in facts]
    lines += ["", "| runtime | version | newest opset | newest IR | " + " | ".join(f"`{c}`" for c in COLUMNS) + " |",
              "|---" * (4 + len(COLUMNS)) + "|"]
    for r in rows:
        head = [r["runtime"], r["version"], str(r["max_opset"] or "-"), str(r["max_ir"] or "-")]
        if r["error"]:
            lines.append("| " + " | ".join(head + [r["error"][:120]] + [""] * (len(COLUMNS) - 1)) + " |")
            continue
        lines.append("| " + " | ".join(head + [_cell(r["files"].get(c)) for c in COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def _meta(run: Path, formats: str, inputs: dict) -> dict:
    import platform

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d"), "run": f"{run.name} (resnet18, 64 px, trained from scratch on "
            "generated photo-like images)", "export": f"tlexport export RUN --format {formats} --precision fp32,int8 "
            "--bake-preprocess", "floats": inputs["floats"]["shape"][0], "images": len(inputs["images"]),
            "node": node, "machine": f"{platform.machine()}, Python {platform.python_version()}"}


# ---- the table tlexport/formats/onnx/compat.py restates --------------------------------------------
def release(row: dict, facts: dict) -> dict | None:
    """One measured row as `compat.Release` fields: what it lacks is every feature of a file it did
    not load or agree on that no file it ran well has (conservative: it may lack fewer)."""
    if row["error"] or not row["files"] or "fresh" in row["version"] and row["runtime"] == "litert":
        return None
    good = {f for name, v in row["files"].items() if v["status"] == "agrees" for f in facts[name].get("features", [])}
    lacks = sorted({f for name, v in row["files"].items() if v["status"] != "agrees"
                    for f in facts[name].get("features", []) if f not in good})
    onnx_run = [facts[n] for n in row["files"] if n.endswith(".onnx")]
    opset, ir = row["max_opset"], row["max_ir"]
    if opset is None and onnx_run:  # not probed (OpenCV): the opset and IR of the files it was given
        opset, ir = max(f["opset"] for f in onnx_run), max(f["ir"] for f in onnx_run)
    orts = sorted({facts[n]["ort_format"] for n, v in row["files"].items() if n.endswith(".ort") and v["status"] == "agrees"})
    tflite = any(n.endswith(".tflite") and v["status"] == "agrees" for n, v in row["files"].items())
    return {"runtime": row["runtime"], "version": row["version"].split(" ")[0], "opset": opset, "ir": ir,
            "lacks": lacks, "ort_formats": orts, "tflite": tflite}


def releases_code(result: dict) -> str:
    """`RELEASES = (...)` for tlexport/formats/onnx/compat.py, from a compat-DATE.json."""
    from tlexport.formats.onnx import compat

    names = {v: k for k, v in vars(compat).items() if isinstance(v, str) and k.isupper() and k != "RESULT"}
    facts = {f["file"]: f for f in result["files"]}
    lines = ["RELEASES: tuple[Release, ...] = ("]
    made = [release(row, facts) for row in result["rows"]]
    made = sorted((r for r in made if r and r["runtime"] != "litert"), key=lambda r: (r["runtime"], _version(r["version"])))
    for r in made:
        lacks = ", ".join(names[f] for f in r["lacks"])
        lines.append(f"    Release({r['runtime']!r}, {r['version']!r}, {r['opset']}, {r['ir']}, ({lacks}{',' if len(r['lacks']) == 1 else ''}), "
                     f"{tuple(r['ort_formats'])!r}, {r['tflite']}),")
    return "\n".join([*lines, ")"]).replace("'", '"')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tlexport-compat"), help="environments (kept)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tlexport-compat-work"), help="run, export, outputs")
    ap.add_argument("--run", type=Path, help="an existing run directory (default: train a tiny one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--formats", default="onnx,ort,tflite",
                    help="what to export (tflite only where its extra is installed)")
    ap.add_argument("--table", type=Path, help="print compat.py's RELEASES for this result JSON and stop")
    ap.add_argument("--only", help="run these runtimes only (comma-separated), replacing their rows in --merge")
    ap.add_argument("--merge", type=Path, help="with --only: the result JSON whose other rows are kept")
    ap.add_argument("--export", type=Path, help="an export folder of RUN made by this script (skip exporting)")
    args = ap.parse_args()
    if args.table:
        print(releases_code(json.loads(args.table.read_text())))
        return
    import importlib.util

    args.cache.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.run or train_run(args.work)
    wanted = args.formats.split(",")
    formats = ",".join(f for f in wanted if f != "tflite" or importlib.util.find_spec("litert_torch"))
    export_dir = args.export or args.work / "export"
    if args.export:
        manifest = json.loads((export_dir / "manifest.json").read_text())
    else:
        print(f"exporting {run} ({formats})", flush=True)
        manifest = export(run, export_dir, formats)
    inputs = write_inputs(run, args.work)
    only = set(args.only.split(",")) if args.only else None
    rows = targets(args.cache, export_dir, inputs, args.work, probes(args.work), only)
    rows = compare(rows)
    if args.merge:  # the other rows of an earlier result on the same export (--export)
        rows = [r for r in json.loads(args.merge.read_text())["rows"] if r["runtime"] not in only] + rows
    meta = _meta(run, formats, inputs)
    facts = file_facts(export_dir, manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compat-{meta['date']}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "files": facts, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(report(rows, facts, meta))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
