"""The GPU check behind benchmarks/gpu_check.sh: one run on a single CUDA GPU, under 8 minutes.

Sections (each guarded: a failure is recorded and the next section runs):
  env         Python/torch/CUDA, which optional modules are missing (ONNX parts degrade)
  matmul      fp32 / tf32 / bf16 / fp16 matmul ceilings on the GPU
  train_syn   resnet50 training images/s on synthetic in-GPU tensors: channels-last, mixed
              precision (tlexport.training.torchutil.amp_dtype), cudnn.benchmark, SGD, batch 256
  train_real  a short `tlexport.training.loop.train` run on generated JPEGs (loader included)
  export      ONNX fp32/fp16/int8 (when onnx is importable), TorchScript fp32/fp16, .pt2
  parity      `tlexport.verify.parity.parity` on CUDA against torch-eager fp32
  bench       `tlexport.benchmark.bench` on CUDA at batch 1/32/256 (numpy in/out, host copies timed)
  infer_dev   device-resident inference (input already on the GPU): eager fp16 channels-last,
              and torch.compile when time allows -- the "best runtime" for the 1 ms / 20k img/s targets
Everything goes to OUTDIR (results.json, summary.md, bench.*, parity.json); the short table is
printed last. `--device cpu --smoke` runs the same code tiny on a CPU to test the script.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

OPTIONAL = ("onnx", "onnxscript", "onnxruntime", "safetensors", "rich", "click", "matplotlib", "PIL",
            "numpy", "torchvision", "openvino")
START = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - START


class Check:
    """Runs sections, records their results or errors, and keeps the time budget."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget, self.results = out, budget_s, {}

    def section(self, name, fn, *args, need=(), min_left=0.0):
        missing = [m for m in need if importlib.util.find_spec(m) is None]
        left = self.budget - elapsed()
        if missing:
            self.results[name] = {"section_skipped": f"missing module(s): {', '.join(missing)}"}
        elif left < min_left:
            self.results[name] = {"section_skipped": f"time budget: {left:.0f} s left, needs ~{min_left:.0f} s"}
        else:
            print(f"[{elapsed():6.1f}s] {name} ...", flush=True)
            t0 = time.monotonic()
            try:
                self.results[name] = fn(*args)
            except Exception as e:  # record and go on: the other sections are still worth having
                self.results[name] = {"error": f"{type(e).__name__}: {str(e).strip()[:500]}",
                                      "traceback": traceback.format_exc()[-3000:]}
            self.results[name]["seconds"] = round(time.monotonic() - t0, 1)
        print(f"[{elapsed():6.1f}s] {name}: {_brief(self.results[name])}", flush=True)
        self.save()
        return self.results[name]

    def save(self):
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")


def _brief(d: dict) -> str:
    if "error" in d:
        return "ERROR " + d["error"][:200]
    if "section_skipped" in d:
        return "skipped: " + d["section_skipped"]
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (dict, list)))[:300]


def env_section() -> dict:
    import torch

    from tlexport.envinfo import environment

    missing = [m for m in OPTIONAL if importlib.util.find_spec(m) is None]
    return {"cuda": torch.cuda.is_available(), "missing_modules": missing, "environment": environment()}


def matmul_section(device: str, smoke: bool) -> dict:
    from matmul_ceiling import matmul_ceiling

    import torch

    n = 512 if smoke else 8192
    out = {"fp32": matmul_ceiling(n, 5, device=device)["median_gflops"]}
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        a = torch.randn(n, n, device="cuda")
        out["tf32"] = _gemm_gflops(lambda: a @ a, n)
        for dt in ("bfloat16", "float16"):
            out[dt] = matmul_ceiling(n, 10, device=device, dtype=dt)["median_gflops"]
        torch.backends.cuda.matmul.allow_tf32 = False
    return out


def _gemm_gflops(fn, n, reps=10):
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return round(2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9, 1)


def train_synthetic(device: str, smoke: bool, compile_model: bool = False) -> dict:
    """resnet50 training step on in-GPU random tensors: what the GPU itself sustains."""
    import torch

    from tlexport import models
    from tlexport.training.loop import train_step
    from tlexport.training.torchutil import amp_dtype

    arch, batch, size, warm, steps = ("resnet18", 8, 64, 1, 3) if smoke else ("resnet50", 256, 224, 15, 150)
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    model = models.create(arch, 1000).to(dev).to(memory_format=torch.channels_last).train()
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = amp_dtype(dev)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    crit = torch.nn.CrossEntropyLoss()

    def step():  # tlexport's own training step
        train_step(step_model, x, y, opt, scaler, crit, dtype)

    t_compile = time.perf_counter()
    for _ in range(warm):
        step()
    _sync(device)
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    secs = time.perf_counter() - t0
    return {"arch": arch, "batch": batch, "image_size": size, "amp": str(dtype), "channels_last": True,
            "compiled": compile_model, "warmup_s": round(t_compile, 1), "steps": steps,
            "images_per_s": round(batch * steps / secs, 1), "target_images_per_s": 3000}


def _sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def make_data(work: Path, smoke: bool) -> Path:
    from tlexport.data.synth import make_dataset

    per, val, size = (6, 3, 64) if smoke else (160, 40, 256)
    return make_dataset(work / "data", classes=("circle", "square", "triangle", "star"), per_class=per,
                        val_per_class=val, size=size, split=True, fmt="jpg")


def train_real(data: Path, work: Path, device: str, smoke: bool) -> dict:
    from tlexport.training.config import TrainConfig
    from tlexport.training.loop import train

    cfg = TrainConfig(data=str(data), arch="resnet18" if smoke else "resnet50", weights="none", epochs=1,
                      batch_size=8 if smoke else 128, image_size=64 if smoke else 224, device=device,
                      out=str(work / "run"), max_steps=2 if smoke else 5)
    r = train(cfg)
    h = r.history[-1]
    d = {"run_dir": str(r.run_dir), "epochs": r.epochs, "val_acc": h.val_acc}
    d.update({k: v for k, v in vars(h).items() if "per_s" in k or "rate" in k or k == "seconds"})
    return d


def export_section(run_dir: Path, work: Path, device: str) -> dict:
    """Every format the installed modules allow; without ONNX tooling, TorchScript and .pt2 only."""
    from tlexport.exporters.pipeline import export

    onnx_ok = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    formats = ["torchscript", "pt2"] + (["onnx"] if onnx_ok else [])
    precisions = ["fp32", "fp16"] + (["int8"] if onnx_ok else [])
    first_error = None
    try:
        res = export(run_dir, formats=formats, precisions=precisions, out=work / "export", device=device,
                     calib_size=32, verify=False)
    except Exception as e:  # e.g. the ONNX exporter missing a piece: keep the torch formats
        first_error = f"{type(e).__name__}: {str(e)[:300]}"
        res = export(run_dir, formats=["torchscript", "pt2"], precisions=["fp32", "fp16"], out=work / "export",
                     device=device, verify=False)
    return {"out_dir": str(res.out_dir), "files": [a.file for a in res.artifacts], "skipped": res.skipped,
            "export_s": round(res.seconds, 1), "first_attempt_error": first_error}


def parity_section(export_dir: Path, data: Path, device: str, out: Path) -> dict:
    from tlexport.verify.parity import parity

    rep = parity(export_dir, data=data / "val", devices=(device,), max_images=64, batch_size=16)
    d = rep.to_dict()
    (out / "parity.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
    rows = [{k: r.get(k) for k in ("runtime", "precision", "device", "max_abs", "top1_agreement", "passed")}
            for r in d["results"]]
    return {"passed": d["passed"], "results": rows}


def bench_section(export_dir: Path, device: str, smoke: bool, out: Path) -> dict:
    from tlexport.benchmark import bench
    from tlexport.fileio import write_json, write_text
    from tlexport.render import latency_vs_batch

    rep = bench(export_dir, devices=(device,), batch_sizes=(1, 4) if smoke else (1, 32, 256),
                warmup=3 if smoke else 10, duration=0.2 if smoke else 1.0)
    write_json(out / "bench.json", rep.to_dict())
    write_text(out / "bench.md", rep.to_markdown())
    latency_vs_batch(rep, out / "bench.png")
    return {"results": [{k: r.to_dict()[k] for k in ("runtime", "precision", "batch_size", "p50_ms", "throughput", "error")}
                        for r in rep.results]}


def infer_device_resident(run_dir: Path, device: str, smoke: bool, compile_model: bool) -> dict:
    """Inference with the batch already on the GPU (what an in-process GPU app sees)."""
    import torch

    from tlexport.benchmark import summarize
    from tlexport.models import load_run

    run = load_run(run_dir)
    model = run.load_model(device=device).to(memory_format=torch.channels_last)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model.to(dtype)
    fn = torch.compile(model, mode="max-autotune-no-cudagraphs") if compile_model else model
    size = run.preprocess.crop
    rows = []
    for b in ((1, 4) if smoke else (1, 32, 256)):
        xs = [torch.randn(b, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
              for _ in range(4)]
        times = []
        with torch.inference_mode():
            for i in range(10 + (20 if not smoke else 5)):
                _sync(device)
                t0 = time.perf_counter()
                fn(xs[i % 4])
                _sync(device)
                if i >= 10:
                    times.append(time.perf_counter() - t0)
        s = summarize(times, b)
        rows.append({"batch": b, "p50_ms": round(s["p50_ms"], 3), "throughput": round(s["throughput"], 1)})
    return {"runtime": f"torch-eager {'fp16' if device == 'cuda' else 'fp32'} channels-last" + (" + compile" if compile_model else ""),
            "device_resident": True, "results": rows, "targets": "b1 <= 1 ms, b256 >= 20000 img/s"}


def summary_table(results: dict) -> str:
    """The short table printed last."""
    lines = ["", "=" * 78, "GPU CHECK SUMMARY", "=" * 78]
    env = results.get("env", {})
    gpu = (env.get("environment") or {}).get("gpu") or {}
    lines.append(f"GPU: {gpu.get('name')}  driver {gpu.get('driver')}  CUDA {gpu.get('cuda')}   "
                 f"missing modules: {', '.join(env.get('missing_modules') or []) or 'none'}")
    mm = results.get("matmul", {})
    if "fp32" in mm:
        lines.append("matmul GFLOP/s: " + ", ".join(f"{k} {v}" for k, v in mm.items() if k != "seconds"))
    for key in ("train_syn", "train_syn_compiled"):
        t = results.get(key, {})
        if "images_per_s" in t:
            lines.append(f"{key}: {t['arch']} b{t['batch']} {t['amp']} channels-last: {t['images_per_s']} img/s (target >= 3000)")
    tr = results.get("train_real", {})
    if "run_dir" in tr:
        lines.append("train_real (tlexport.training, JPEG loader): " + _brief(tr))
    p = results.get("parity", {})
    if "results" in p:
        lines.append(f"parity passed: {p['passed']}")
        for r in p["results"]:
            lines.append(f"  {r['runtime']}/{r['precision']}/{r['device']}: max_abs {r['max_abs']} top1 {r['top1_agreement']} passed {r['passed']}")
    b = results.get("bench", {})
    if "results" in b:
        lines.append(f"{'bench (numpy in/out)':34s} {'batch':>5s} {'p50 ms':>9s} {'img/s':>10s}")
        for r in b["results"]:
            label = f"{r['runtime']}/{r['precision']}"
            if r["error"]:
                lines.append(f"{label:34s} {r['batch_size']:5d} error: {r['error'][:30]}")
            else:
                lines.append(f"{label:34s} {r['batch_size']:5d} {r['p50_ms']:9.3f} {r['throughput']:10.1f}")
    for key in ("infer_dev", "infer_dev_compiled"):
        d = results.get(key, {})
        for r in d.get("results", []):
            lines.append(f"{d['runtime'] + ' (on-GPU input)':34s} {r['batch']:5d} {r['p50_ms']:9.3f} {r['throughput']:10.1f}")
    for name, d in results.items():
        if isinstance(d, dict) and ("error" in d or "section_skipped" in d):
            lines.append(f"{name}: {_brief(d)}")
    lines.append(f"total {elapsed():.0f} s")
    return "\n".join(lines)


def run_gpu_sections(chk: Check, device: str, smoke: bool, work: Path) -> None:
    chk.section("matmul", matmul_section, device, smoke, min_left=30)
    chk.section("train_syn", train_synthetic, device, smoke, min_left=60)
    data = make_data(work, smoke)
    tr = chk.section("train_real", train_real, data, work, device, smoke, need=("safetensors", "PIL"), min_left=60)
    run_dir = Path(tr["run_dir"]) if "run_dir" in tr else None
    if run_dir is None:
        return
    ex = chk.section("export", export_section, run_dir, work, device, min_left=60)
    export_dir = Path(ex["out_dir"]) if "out_dir" in ex else None
    if export_dir is not None:
        chk.section("parity", parity_section, export_dir, data, device, chk.out, min_left=45)
        chk.section("bench", bench_section, export_dir, device, smoke, chk.out, need=("matplotlib",), min_left=60)
    chk.section("infer_dev", infer_device_resident, run_dir, device, smoke, False, min_left=20)
    # Optional extras, only when the budget still allows (compilation takes a minute or two).
    chk.section("infer_dev_compiled", infer_device_resident, run_dir, device, smoke, True, min_left=150)
    chk.section("train_syn_compiled", train_synthetic, device, smoke, True, min_left=150)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to test this script on a CPU")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole check")
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    chk = Check(args.outdir, args.budget)
    env = chk.section("env", env_section)
    if args.device == "cuda" and not env.get("cuda"):
        print(summary_table(chk.results))
        print("\nERROR: this check needs a CUDA GPU and torch sees none; only the CPU-safe parts ran "
              "(install, imports, environment).", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="tlexport-gpu-check-") as tmp:
        run_gpu_sections(chk, args.device, args.smoke, Path(tmp))
    try:
        table = summary_table(chk.results)
    except Exception as e:  # the raw results are in results.json either way
        table = f"(summary table failed: {type(e).__name__}: {e}; see results.json)"
    (args.outdir / "summary.md").write_text("```\n" + table + "\n```\n")
    print(table)
    return 1 if any("error" in v for v in chk.results.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
