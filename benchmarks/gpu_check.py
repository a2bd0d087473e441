"""The GPU check behind benchmarks/gpu_check.sh: one prepared run on a lent CUDA machine.

Each section runs in its own process with its own time limit, so a hang, a crash or a broken
CUDA context costs that section only; results.json and summary.md are rewritten after every
section, so whatever happens later, what was measured so far is on disk. Sections, headline
numbers first and compilation last:

  env                 Python/torch/CUDA, GPUs, missing modules, /dev/shm, onnxruntime providers
  train_syn           resnet50 training img/s, batch 256, AMP (bf16/fp16) + channels-last, data on the GPU
  data                generated JPEGs (6 classes) for the loader, the run, parity
  train_real          the same step fed by tlexport's own DataLoader from the JPEGs (loader alone too)
  train_run           `tlexport.train` end to end on CUDA -> a run directory (3 short epochs)
  export              ONNX fp32/fp16, TorchScript fp32/fp16, .pt2 with --device cuda, verified on CPU and CUDA
  parity              `tlexport.parity` on CUDA against torch-eager fp32 (the gates of the README)
  bench               `tlexport.bench` on CUDA at batch 1 and 256 (numpy in/out, copies included)
  gpu_tests           pytest -m gpu tests/test_gpu.py (AMP step, CUDA parity, CUDA bench cell)
  matmul              fp32 / tf32 / bf16 / fp16 matmul ceilings
  infer_dev           device-resident inference, eager fp16 channels-last, batch 1 and 256
  ddp                 `tlexport train --nproc N` when that exists and more than one GPU is visible
  photos              generated phone photos (4032x3024 JPEGs of ~4 MB, some with EXIF orientation)
  feeding             the training step fed from those photos: tlexport's image cache, reduced decoding
                      without it, full decoding (tlexport before issue 21), torchvision's GPU decode_jpeg
  infer_dev_compiled  torch.compile(mode="reduce-overhead") of the same (optional: budget allowing)
  train_syn_compiled  torch.compile of the training step (optional: budget allowing)

Statuses: ok | failed (ran; its check failed) | error | timeout | skipped (could not run: a missing
module, a section it needs, the time budget) | n/a (does not apply to this machine).
Exit codes: 0 every required section ok or n/a; 1 a required section failed, errored, timed out or
was skipped (optional sections count only when they fail or error); 2 bad usage; 3 --device cuda
but torch sees no GPU (only env ran).

  python benchmarks/gpu_check.py OUTDIR [--device cuda|cuda:N] [--budget 480] [--only a,b]
  python benchmarks/gpu_check.py OUTDIR --smoke          # tiny sizes on the CPU: tests this script
  python benchmarks/gpu_check.py OUTDIR --summarize      # rewrite summary.md from results.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
START = time.monotonic()
TRAIN_TARGET = 2500  # img/s, resnet50 AMP channels-last on an H100/H200 (issue 11)
REAL_RATIO_TARGET = 0.8  # JPEG-fed training >= 80% of the synthetic rate
INFER_TARGETS = "batch 1 <= 1 ms, batch 256 >= 20000 img/s"


# ---- devices --------------------------------------------------------------------------------
def is_cuda(device: str) -> bool:
    """"cuda" and "cuda:N" alike (comparing with "cuda" misses an index)."""
    return str(device).split(":")[0] == "cuda"


def sync(device: str) -> None:
    """Wait for queued GPU work, so a host clock read after it includes that work."""
    if is_cuda(device):
        import torch

        torch.cuda.synchronize()


def timed_steps(step, device: str, per_step: int, warmup: int, min_steps: int, min_seconds: float,
                max_seconds: float) -> dict:
    """Run `step()` `warmup` times untimed (autotuning, worker start-up, allocator growth), then
    time at least `min_steps` steps and `min_seconds`, at most `max_seconds`; synchronised.

    Returns:
        {"warmup_steps", "warmup_s", "steps", "seconds", "images_per_s", "median_step_ms"}
    """
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - t0
    times, start = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        step()
        sync(device)  # per step: the median step time needs it; at batch 256 its cost is noise
        times.append(time.perf_counter() - t)
        spent = time.perf_counter() - start
        if (len(times) >= min_steps and spent >= min_seconds) or spent >= max_seconds:
            break
    times.sort()
    return {"warmup_steps": warmup, "warmup_s": round(warm_s, 2), "steps": len(times),
            "seconds": round(spent, 3), "images_per_s": round(per_step * len(times) / spent, 1),
            "median_step_ms": round(1e3 * times[len(times) // 2], 3)}


# ---- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """One section: its time limit (full, smoke), the sections whose results it needs, the
    modules it imports, and whether it is optional (run only when the budget allows)."""

    name: str
    limit: float
    smoke_limit: float
    needs: tuple = ()
    modules: tuple = ("torch",)
    optional: bool = False


SECTIONS = (
    Section("env", 60, 120),
    Section("train_syn", 120, 300, modules=("torch", "torchvision")),
    Section("data", 90, 120, modules=("numpy", "PIL")),
    Section("train_real", 150, 300, ("data",), ("torch", "torchvision", "PIL")),
    Section("train_run", 150, 400, ("data",), ("torch", "torchvision", "PIL", "safetensors", "matplotlib")),
    Section("export", 240, 500, ("train_run",), ("torch", "safetensors", "onnx", "onnxscript", "onnxruntime")),
    Section("parity", 120, 300, ("export", "data"), ("torch", "safetensors", "onnxruntime")),
    Section("bench", 150, 300, ("export",), ("torch", "safetensors", "onnxruntime")),
    Section("gpu_tests", 180, 300, modules=("torch", "pytest", "safetensors", "click", "onnxruntime")),
    Section("matmul", 60, 120),
    Section("infer_dev", 60, 200, ("train_run",), ("torch", "safetensors")),
    Section("ddp", 240, 400, ("data",), ("torch", "click", "rich", "safetensors")),
    Section("photos", 120, 200, modules=("numpy", "PIL")),
    Section("feeding", 180, 400, ("photos",), ("torch", "torchvision", "PIL")),
    Section("infer_dev_compiled", 240, 500, ("train_run",), ("torch", "safetensors"), optional=True),
    Section("train_syn_compiled", 240, 600, modules=("torch", "torchvision"), optional=True),
)
BY_NAME = {s.name: s for s in SECTIONS}


@dataclass
class Ctx:
    """What a section's process knows: the device, the mode and the folders."""

    device: str
    smoke: bool
    work: Path
    out: Path

    @property
    def kind(self) -> str:
        """The device type the export/parity/bench API takes ("cpu" | "cuda")."""
        return "cuda" if is_cuda(self.device) else "cpu"

    def result(self, name: str) -> dict:
        path = self.work / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def size(ctx: Ctx, full, smoke):
    return smoke if ctx.smoke else full


# ---- sections (each runs in its own process) ----------------------------------------------------
def sec_env(ctx: Ctx) -> dict:
    import shutil

    import torch

    from tlexport.envinfo import environment

    mods = ("torch", "torchvision", "numpy", "PIL", "onnxruntime", "safetensors", "onnx", "onnxscript",
            "click", "rich", "matplotlib", "pytest", "openvino")
    shm = shutil.disk_usage("/dev/shm") if os.path.isdir("/dev/shm") else None
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception as e:  # reported, not fatal: the torch sections still run
        providers = f"onnxruntime unusable: {type(e).__name__}: {e}"
    out = {"cuda": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
           "missing_modules": [m for m in mods if importlib.util.find_spec(m) is None],
           "dev_shm_free_gib": round(shm.free / 2**30, 2) if shm else None,
           "cpu_count": os.cpu_count(), "onnxruntime_providers": providers,
           "installed_wheels": _installed_wheels(), "environment": environment()}
    if ctx.kind == "cuda" and not out["cuda"]:
        out.update(status="failed", reason="--device cuda but torch sees no CUDA GPU")
    return out


def _installed_wheels() -> list[str]:
    site = os.environ.get("TLEXPORT_SITE")
    if not site or not Path(site).is_dir():
        return []
    return sorted(p.name[: -len(".dist-info")] for p in Path(site).glob("*.dist-info"))


def amp_label(dtype) -> str:
    return str(dtype).replace("torch.", "") if dtype is not None else "fp32 (no autocast off CUDA)"


def _train_setup(ctx: Ctx, arch: str, classes: int):
    """Model (channels-last, on the device), SGD, AMP dtype and scaler as tlexport trains."""
    import torch

    from tlexport import models
    from tlexport.training.torchutil import amp_dtype, resolve_device

    dev = resolve_device(ctx.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # what tlexport's training sets on CUDA
    model = models.create(arch, classes).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = amp_dtype(dev)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dev, model, opt, dtype, scaler


def sec_train_syn(ctx: Ctx, compiled: bool = False) -> dict:
    """The training step on random tensors already on the device: what the GPU sustains."""
    import torch

    from tlexport.training.engine import Engine

    arch, batch, px = size(ctx, ("resnet50", 256, 224), ("resnet18", 8, 64))
    dev, model, opt, dtype, scaler = _train_setup(ctx, arch, 1000)
    fn = torch.compile(model) if compiled else model
    g = torch.Generator(device=dev).manual_seed(0)
    xs = [torch.randn(batch, 3, px, px, device=dev, generator=g).contiguous(memory_format=torch.channels_last)
          for _ in range(2)]
    ys = [torch.randint(0, 1000, (batch,), device=dev, generator=g) for _ in range(2)]
    engine, i = Engine(opt, torch.nn.CrossEntropyLoss(), scaler=scaler, dtype=dtype), [0]

    def step():
        k = i[0] % 2
        engine.step(fn, [(xs[k], ys[k])])
        i[0] += 1

    warm = size(ctx, 20 if compiled else 15, 2)
    r = timed_steps(step, ctx.device, batch, warm, *size(ctx, (40, 5.0, 30.0), (3, 0.0, 60.0)))
    r.update(arch=arch, batch=batch, image_size=px, amp=amp_label(dtype), channels_last=True,
             compiled=compiled, target_images_per_s=TRAIN_TARGET)
    if dev.type == "cuda":
        r["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return r


def sec_data(ctx: Ctx) -> dict:
    """JPEGs of drawn shapes, written by one process per core."""
    from concurrent.futures import ProcessPoolExecutor

    from tlexport.data.synth import SHAPES

    per, val, px = size(ctx, (768, 40, 320), (8, 3, 64))  # 6 x 768 = 18 full batches of 256
    root = ctx.work / "data"
    jobs, chunk = [], 50
    for part, n in (("train", per), ("val", val)):
        for c, shape in enumerate(SHAPES):
            for start in range(0, n, chunk):
                seed = (part == "val") * 10**6 + c * 10**4 + start  # fixed: the same files every run
                jobs.append((str(root / part / shape), shape, start, min(chunk, n - start), px, seed))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        written = sum(pool.map(_draw_chunk, jobs))
    return {"root": str(root), "images": written, "classes": len(SHAPES), "train_per_class": per,
            "val_per_class": val, "image_px": px, "format": "jpg", "seconds_writing": round(time.perf_counter() - t0, 1)}


def _draw_chunk(job) -> int:
    import random

    from tlexport.data.synth import draw_shape

    folder, shape, start, count, px, seed = job
    Path(folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(start, start + count):
        draw_shape(shape, px, rng).save(Path(folder) / f"{shape}_{i:05d}.jpg", quality=90)
    return count


def loader_workers(batch: int, px: int, wanted: int, prefetch: int = 4) -> tuple[int, str]:
    """Loader processes that fit in /dev/shm: each keeps `prefetch` float32 batches there, and a
    full /dev/shm kills workers with a bus error. Returns (workers, why)."""
    import shutil

    per_worker = prefetch * batch * 3 * px * px * 4 * 1.25  # + headroom for collation copies
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return 0, "no /dev/shm: loading in the main process"
    fit = int(free // per_worker)
    if fit >= wanted:
        return wanted, f"{wanted} workers ({free / 2**30:.1f} GiB free in /dev/shm)"
    return max(fit, 0), (f"only {fit} of {wanted} workers fit in /dev/shm ({free / 2**30:.2f} GiB free, "
                         f"{per_worker / 2**30:.2f} GiB each)")


def _loader(ctx: Ctx, arch: str, batch: int, px: int, workers: int):
    """tlexport's own training loader (make_loaders: augmentation, collation, pinning)."""
    from tlexport.data.folders import scan
    from tlexport.models import default_preprocess
    from tlexport.training.config import TrainConfig
    from tlexport.training.inputs import make_loaders
    from tlexport.training.torchutil import resolve_device

    root = ctx.result("data")["root"]
    # every step decodes its JPEGs, as recorded before the image cache (the feeding section times the cache)
    cfg = TrainConfig(data=root, arch=arch, weights="none", batch_size=batch, image_size=px, workers=workers,
                      data_cache="off")
    train, _, _ = make_loaders(scan(root, cfg.val_fraction, cfg.seed), default_preprocess(arch).with_crop(px),
                               cfg, resolve_device(ctx.device))
    return train


def _endless(loader):
    while True:
        for b in loader:
            if b is not None:
                yield b


def _loader_rate(ctx: Ctx, arch: str, batch: int, px: int, workers: int) -> dict:
    """Images/s of the loader alone (no model): the ceiling it puts on JPEG-fed training."""
    it = _endless(_loader(ctx, arch, batch, px, workers))
    r = timed_steps(lambda: len(next(it)[1]), "cpu", batch, size(ctx, 4, 1), *size(ctx, (15, 2.0, 15.0), (2, 0.0, 30.0)))
    return {"workers": workers, "images_per_s": r["images_per_s"], "steps": r["steps"]}


def sec_train_real(ctx: Ctx) -> dict:
    """The synthetic section's step, fed from JPEG files by tlexport's DataLoader."""
    import torch

    from tlexport.training.engine import Engine
    from tlexport.training.inputs import default_workers
    from tlexport.training.torchutil import resolve_device, to_device

    arch, batch, px = size(ctx, ("resnet50", 256, 224), ("resnet18", 8, 64))
    want = min(16, os.cpu_count() or 1)
    workers, why = loader_workers(batch, px, want)
    default = default_workers(resolve_device(ctx.device))
    loader_only = [_loader_rate(ctx, arch, batch, px, w) for w in sorted({workers, min(default, workers)})]
    dev, model, opt, dtype, scaler = _train_setup(ctx, arch, 6)
    it = _endless(_loader(ctx, arch, batch, px, workers))
    engine = Engine(opt, torch.nn.CrossEntropyLoss(), scaler=scaler, dtype=dtype)

    def step():
        x, y = to_device(next(it), dev)
        engine.step(model, [(x, y)])
        return len(y)

    r = timed_steps(step, ctx.device, batch, size(ctx, 8, 1), *size(ctx, (30, 5.0, 40.0), (3, 0.0, 60.0)))
    syn = ctx.result("train_syn").get("images_per_s")
    r.update(arch=arch, batch=batch, image_size=px, amp=amp_label(dtype), workers=workers,
             workers_note=why, library_default_workers=default, loader_only=loader_only,
             vs_synthetic=round(r["images_per_s"] / syn, 3) if syn else None, target_vs_synthetic=REAL_RATIO_TARGET)
    return r


def sec_train_run(ctx: Ctx) -> dict:
    """`tlexport.train` end to end on the device: the run that export, parity and bench use.
    Three short epochs from scratch, so that predictions are not near-ties (fp16 gates count flips)."""
    from tlexport.training.config import TrainConfig
    from tlexport.training.loop import train

    arch, batch, px, epochs, steps = size(ctx, ("resnet50", 128, 224, 3, None), ("resnet18", 8, 64, 1, 3))
    workers, why = loader_workers(batch, px, min(16, os.cpu_count() or 1))
    cfg = TrainConfig(data=ctx.result("data")["root"], arch=arch, weights="none", epochs=epochs, batch_size=batch,
                      lr=0.05, image_size=px, device=ctx.device, out=str(ctx.work / "run"), max_steps=steps,
                      workers=workers)
    import shutil

    shutil.rmtree(cfg.out, ignore_errors=True)  # a rerun on the same machine starts afresh
    r = train(cfg)
    return {"run_dir": str(r.run_dir), "arch": arch, "epochs": r.epochs, "device": r.device, "workers": why,
            "best_val_accuracy": round(r.best_val_accuracy, 4),
            "epochs_images_per_s": [round(h.images_per_s, 1) for h in r.history],
            "epoch_seconds": [round(h.seconds, 1) for h in r.history]}


def sec_export(ctx: Ctx) -> dict:
    """Every format with --device <this>, verified on each device it targets. A failed
    verification is reported, and the artifacts are then written unverified so parity and bench
    still show the details."""
    from tlexport.errors import ExportError
    from tlexport.exporters.pipeline import export

    run_dir, out = ctx.result("train_run")["run_dir"], ctx.work / "export"
    kw = dict(formats=("onnx", "torchscript", "pt2"), precisions=("fp32", "fp16"), out=out, device=ctx.kind)
    failure = None
    try:
        res = export(run_dir, **kw)
    except ExportError as e:
        failure = str(e)
        res = export(run_dir, verify=False, **kw)
    arts = [{"file": a.file, "devices": a.devices, "verified": a.verified,
             "verified_on": (a.verification or {}).get("devices"), "notes": a.notes} for a in res.artifacts]
    d = {"out_dir": str(res.out_dir), "artifacts": arts, "skipped": res.skipped, "export_s": round(res.seconds, 1)}
    if failure:
        d.update(status="failed", reason=failure[:600])
    return d


def sec_parity(ctx: Ctx) -> dict:
    from tlexport.verify.parity import parity

    rep = parity(ctx.result("export")["out_dir"], data=Path(ctx.result("data")["root"]) / "val",
                 devices=(ctx.kind,), max_images=size(ctx, 240, 18), batch_size=size(ctx, 32, 8), trust_code=True)
    d = rep.to_dict()
    (ctx.out / "parity.json").write_text(json.dumps(d, indent=2) + "\n")
    keys = ("runtime", "precision", "device", "max_abs", "top1_agreement", "passed", "skipped_reason", "failures")
    out = {"passed": d["passed"], "images": d["images"], "results": [{k: r.get(k) for k in keys} for r in d["results"]]}
    if not d["passed"]:
        out.update(status="failed", reason="; ".join(f"{r['runtime']}/{r['precision']}/{r['device']}: "
                                                     + "; ".join(r["failures"]) for r in d["results"] if r["failures"]))
    return out


def sec_bench(ctx: Ctx) -> dict:
    from tlexport.benchmark import bench
    from tlexport.fileio import write_json, write_text

    rep = bench(ctx.result("export")["out_dir"], devices=(ctx.kind,), batch_sizes=size(ctx, (1, 256), (1, 4)),
                warmup=size(ctx, 10, 2), duration=size(ctx, 1.0, 0.1), trust_code=True)
    write_json(ctx.out / "bench.json", rep.to_dict())
    write_text(ctx.out / "bench.md", rep.to_markdown())
    plot = "bench.png"
    if importlib.util.find_spec("matplotlib"):
        from tlexport.render import latency_vs_batch

        latency_vs_batch(rep, ctx.out / "bench.png")
    else:
        plot = "not drawn: matplotlib missing"
    keys = ("runtime", "precision", "device", "batch_size", "p50_ms", "throughput", "speedup_vs_eager", "error")
    rows = [{k: r.to_dict()[k] for k in keys} for r in rep.results]
    out = {"results": rows, "skipped": rep.skipped, "plot": plot}
    errors = [f"{r['runtime']}/{r['precision']} b{r['batch_size']}: {r['error']}" for r in rows if r["error"]]
    if errors:
        out.update(status="failed", reason="; ".join(errors)[:600])
    return out


def sec_gpu_tests(ctx: Ctx) -> dict:
    """The gpu-marked tests (they skip without CUDA)."""
    import re

    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    # No plugin autoload: the machine's own pytest plugins may not fit the carried pytest.
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail[-1] if tail else "")}
    out = {"exit_code": p.returncode, "counts": counts, "tail": tail}
    if p.returncode != 0:
        out.update(status="failed", reason=f"pytest exit {p.returncode}: " + (tail[-1] if tail else "no output"))
    elif not counts.get("passed"):
        if ctx.kind == "cuda":
            out.update(status="failed", reason="no gpu test ran on a CUDA machine: " + tail[-1])
        else:
            out.update(status="n/a", reason=f"no CUDA here: {counts.get('skipped', 0)} gpu tests skipped as designed")
    return out


def sec_matmul(ctx: Ctx) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from matmul_ceiling import matmul_ceiling

    n = size(ctx, 8192, 256)
    out = {"n": n, "fp32": matmul_ceiling(n, 10, device=ctx.device)["median_gflops"]}
    dtypes = ("bfloat16", "float16") if ctx.kind == "cuda" else ("bfloat16",)
    for dt in dtypes:
        out[dt] = matmul_ceiling(n, 10, device=ctx.device, dtype=dt)["median_gflops"]
    if ctx.kind == "cuda":
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True  # scoped: restored below
        try:
            a = torch.randn(n, n, device=ctx.device)
            r = timed_steps(lambda: a @ a, ctx.device, 1, 2, 10, 0.0, 10.0)
            out["tf32"] = round(2 * n**3 / (r["median_step_ms"] / 1e3) / 1e9, 1)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
    out["unit"] = "GFLOP/s (median)"
    return out


def sec_infer_dev(ctx: Ctx, compiled: bool = False) -> dict:
    """Inference with the batch already on the device (what an in-process GPU app sees): eager
    fp16 channels-last on CUDA, fp32 on the CPU; compiled with CUDA graphs when asked."""
    import torch

    from tlexport.models import load_run

    run = load_run(ctx.result("train_run")["run_dir"])
    dtype = torch.float16 if ctx.kind == "cuda" else torch.float32
    model = run.load_model(device=ctx.device).to(memory_format=torch.channels_last).to(dtype).eval()
    mode = "reduce-overhead" if ctx.kind == "cuda" else None  # CUDA graphs: launch gaps gone at batch 1
    fn = torch.compile(model, mode=mode, dynamic=False) if compiled else model
    px, rows = run.preprocess.crop, []
    for b in size(ctx, (1, 256), (1, 4)):
        xs = [torch.randn(b, 3, px, px, device=ctx.device, dtype=dtype).contiguous(memory_format=torch.channels_last)
              for _ in range(4)]
        def call(xs=xs, i=[0]):  # noqa: B006 - the counter lives with this batch size's inputs
            fn(xs[i[0] % 4])
            i[0] += 1

        with torch.inference_mode():
            r = timed_steps(call, ctx.device, b, size(ctx, 10, 2), *size(ctx, (50, 1.0, 10.0), (3, 0.0, 60.0)))
        rows.append({"batch": b, "p50_ms": r["median_step_ms"], "images_per_s": round(b / (r["median_step_ms"] / 1e3), 1),
                     "warmup_s": r["warmup_s"]})
    label = f"torch eager {'fp16' if ctx.kind == 'cuda' else 'fp32'} channels-last"
    return {"runtime": label + (f" + compile({mode or 'default'})" if compiled else ""), "results": rows,
            "targets": INFER_TARGETS}


def has_nproc() -> bool:
    """Whether this checkout's `tlexport train` launches data-parallel processes (--nproc)."""
    from tlexport.cli import cli

    return any(p.name == "nproc" for p in cli.commands["train"].params)


def sec_ddp(ctx: Ctx) -> dict:
    """`tlexport train --nproc N` over every visible GPU (2 gloo processes on the CPU in smoke)."""
    import torch

    gpus = torch.cuda.device_count() if ctx.kind == "cuda" else 0
    if not has_nproc():
        return {"status": "n/a", "reason": "this checkout's `tlexport train` has no --nproc (DDP not merged)"}
    if ctx.kind == "cuda" and gpus < 2:
        return {"status": "n/a", "reason": f"{gpus} GPU visible: data-parallel training needs 2 or more"}
    nproc = gpus if ctx.kind == "cuda" else 2
    arch, batch, px, steps = size(ctx, ("resnet50", 256, 224, 12), ("resnet18", 8, 64, 2))
    out_dir = ctx.work / "ddp_run"
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "tlexport", "train", "--data", ctx.result("data")["root"], "--nproc", str(nproc),
           "--arch", arch, "--weights", "none", "--epochs", "1", "--batch-size", str(batch), "--image-size", str(px),
           "--max-steps", str(steps), "--device", ctx.kind, "--out", str(out_dir), "--quiet"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    out = {"nproc": nproc, "command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "exit_code": p.returncode}
    meta = out_dir / "run.json"
    if p.returncode != 0 or not meta.is_file():
        tail = (p.stdout + p.stderr).strip().splitlines()[-5:]
        return {**out, "status": "failed", "reason": " | ".join(tail)[:600]}
    run = json.loads(meta.read_text())
    out["world_size"] = run.get("world_size") or (run.get("options") or {}).get("world_size")
    import csv

    rows = list(csv.DictReader((out_dir / "metrics.csv").open()))
    out["images_per_s"] = float(rows[-1]["images_per_s"]) if rows else None
    return out


def sec_photos(ctx: Ctx) -> dict:
    """Phone-size photos for the feeding section (benchmarks/photos.py), one process per core."""
    sys.path.insert(0, str(HERE))
    from photos import PHONE, SHAPES, write_photos

    per, px = size(ctx, (128, PHONE), (8, (640, 480)))  # 2 x 128: 3 full training batches of 64 an epoch
    root = ctx.work / f"photos-{px[0]}x{px[1]}-{per}"
    marker = root / ".complete"
    t0 = time.perf_counter()
    if not marker.is_file():
        info = write_photos(root, classes=SHAPES[:2], per_class=per, size=px, workers=min(16, os.cpu_count() or 1))
        marker.write_text(json.dumps(info))
    return {"root": str(root), **json.loads(marker.read_text()), "seconds_writing": round(time.perf_counter() - t0, 1)}


def _photo_loader(ctx: Ctx, arch: str, batch: int, px: int, workers: int, cache: str, full_decode: bool):
    """tlexport's training loader over the photos, with its image cache on or off and JPEG DCT
    scaling on or off (full_decode: what tlexport did before issue 21)."""
    from tlexport.data import images
    from tlexport.data.folders import scan
    from tlexport.models import default_preprocess
    from tlexport.training.config import TrainConfig
    from tlexport.training.loop import make_loaders
    from tlexport.training.torchutil import resolve_device

    images.DCT_SCALING = not full_decode  # module state: the forked loader workers inherit it
    root = ctx.result("photos")["root"]
    cfg = TrainConfig(data=root, arch=arch, weights="none", batch_size=batch, image_size=px, workers=workers,
                      data_cache=cache)
    scanned = scan(root, cfg.val_fraction, cfg.seed)
    train, _, _ = make_loaders(scanned, default_preprocess(arch).with_crop(px), cfg, resolve_device(ctx.device))
    return (b for b in _endless(train) if len(b[1]) == batch), len(scanned.train)  # full batches: img/s exact


def _gpu_decoded(ctx: Ctx, arch: str, batch: int, px: int, dev):
    """Batches decoded by torchvision.io.decode_jpeg on the device (batched nvJPEG on CUDA; the CPU
    decoder in a smoke run), then RandomResizedCrop + flip + normalise there. A thread reads the
    next batch's file bytes while this one decodes. Yields (x, y) on the device."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torchvision.io import decode_jpeg
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as F

    from tlexport.data.folders import scan
    from tlexport.models import default_preprocess

    pre = default_preprocess(arch).with_crop(px)
    samples = scan(ctx.result("photos")["root"]).train
    mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(pre.std, device=dev).view(1, 3, 1, 1) * 255
    rng, exif = random.Random(0), [True]

    def read(items):
        return ([torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p, _ in items],
                torch.tensor([y for _, y in items]))

    def decode(datas):
        try:
            return decode_jpeg(datas, device=dev, apply_exif_orientation=exif[0])
        except (RuntimeError, NotImplementedError, ValueError):
            if not exif[0]:
                raise
            exif[0] = False  # this torchvision cannot turn on the device: decode as stored
            return decode_jpeg(datas, device=dev)

    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(read, rng.sample(samples, min(batch, len(samples))))
        while True:
            datas, y = ahead.result()
            ahead = reader.submit(read, rng.sample(samples, min(batch, len(samples))))
            crops = []
            for img in decode(datas):
                i, j, h, w = RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
                c = F.resized_crop(img, i, j, h, w, [px, px], antialias=True)
                crops.append(F.horizontal_flip(c) if rng.random() < 0.5 else c)
            x = ((torch.stack(crops).float() - mean) / std).contiguous(memory_format=torch.channels_last)
            yield x, y.to(dev, non_blocking=True), exif[0]


def sec_feeding(ctx: Ctx) -> dict:
    """One training step (train_syn's model, AMP, channels-last) fed four ways from phone photos,
    so the first GPU that runs this shows which feeder keeps it busy."""
    import gc
    import math
    import shutil

    import torch

    from tlexport.training.loop import train_step
    from tlexport.training.torchutil import to_device

    arch, batch, px = size(ctx, ("resnet50", 64, 224), ("resnet18", 4, 32))
    workers, why = loader_workers(batch, px, min(16, os.cpu_count() or 1))
    shutil.rmtree(os.environ.get("TLEXPORT_CACHE_DIR", ctx.work / "tlexport-cache"), ignore_errors=True)
    dev, model, opt, dtype, scaler = _train_setup(ctx, arch, 2)
    crit, rows = torch.nn.CrossEntropyLoss(), []
    timing = size(ctx, (6, 3.0, 25.0), (2, 0.0, 60.0))
    plan = (("synthetic (tensors on the device)", "synthetic", None),
            ("tlexport image cache (epochs 2+)", "disk", False), ("reduced JPEG decode, no cache", "off", False),
            ("full decode (tlexport before #21)", "off", True), ("torchvision decode_jpeg on " + dev.type, None, None))
    for name, cache, full in plan:
        try:
            if cache == "synthetic":
                x = torch.randn(batch, 3, px, px, device=dev).contiguous(memory_format=torch.channels_last)
                it, warm = iter(lambda: (x, torch.zeros(batch, dtype=torch.long, device=dev)), None), 3
            elif cache is None:
                it, warm = _gpu_decoded(ctx, arch, batch, px, dev), 2
            else:
                it, n = _photo_loader(ctx, arch, batch, px, workers, cache, full)
                warm = math.ceil(n / batch) + 1 if cache == "disk" else 2  # the cache fills in epoch 1
            extra = {}

            def step():
                b = next(it)
                if len(b) == 3:
                    extra["exif_applied"] = b[2]
                x, y = to_device(b[:2], dev)
                train_step(model, x, y, opt, scaler, crit, dtype)

            r = timed_steps(step, ctx.device, batch, warm, *timing)
            rows.append({"feeder": name, "images_per_s": r["images_per_s"], "median_step_ms": r["median_step_ms"],
                         "warmup_steps": warm, "warmup_s": r["warmup_s"], **extra})
        except Exception as e:  # one feeder failing (no nvJPEG, out of memory) still reports the others
            rows.append({"feeder": name, "error": f"{type(e).__name__}: {str(e).strip()[:300]}"})
        it = None
        gc.collect()  # the loader's worker processes end with it
    syn = rows[0].get("images_per_s")
    for r in rows:
        r["vs_synthetic"] = round(r["images_per_s"] / syn, 3) if syn and "images_per_s" in r else None
    out = {"arch": arch, "batch": batch, "image_size": px, "amp": amp_label(dtype), "workers": workers,
           "workers_note": why, "photos": ctx.result("photos").get("files"), "results": rows}
    failed = [r for r in rows if "error" in r and not r["feeder"].startswith("torchvision")]  # nvJPEG may be absent
    if failed:
        out.update(status="failed", reason="; ".join(f"{r['feeder']}: {r['error']}" for r in failed)[:600])
    return out


SECTION_FUNCS = {
    "env": sec_env, "train_syn": sec_train_syn, "data": sec_data, "train_real": sec_train_real,
    "train_run": sec_train_run, "export": sec_export, "parity": sec_parity, "bench": sec_bench,
    "gpu_tests": sec_gpu_tests, "matmul": sec_matmul, "infer_dev": sec_infer_dev, "ddp": sec_ddp,
    "photos": sec_photos, "feeding": sec_feeding,
    "infer_dev_compiled": lambda ctx: sec_infer_dev(ctx, compiled=True),
    "train_syn_compiled": lambda ctx: sec_train_syn(ctx, compiled=True),
}


def child_main(name: str, ctx: Ctx) -> int:
    """Run one section in this process and write WORK/<name>.json."""
    if is_cuda(ctx.device) and ":" in ctx.device:
        import torch

        torch.cuda.set_device(int(ctx.device.split(":")[1]))  # so the "cuda" of the export API is this GPU
    try:
        result = SECTION_FUNCS[name](ctx)
    except Exception as e:  # the parent records it; the next section still runs
        result = {"status": "error", "reason": f"{type(e).__name__}: {str(e).strip()[:500]}",
                  "traceback": traceback.format_exc()[-3000:]}
    result.setdefault("status", "ok")
    (ctx.work / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


# ---- the parent: runs each section in a child process, keeps results and the summary ----------
RESERVE_S = 5  # kept back to write the summary
USABLE = {"data": "root", "train_run": "run_dir", "export": "out_dir", "photos": "root"}  # a dependency's result key
FAILING = ("failed", "error", "timeout", "skipped")


class Runner:
    def __init__(self, args, ctx: Ctx):
        self.args, self.ctx, self.results, self.child = args, ctx, {}, None
        self.log = (ctx.out / "log.txt").open("a")
        self.only = set(args.only.split(",")) if args.only else None

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - START:6.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - START)

    def why_not(self, s: Section) -> tuple[str, str] | None:
        """(status, reason) when the section cannot or need not run now."""
        if self.only is not None and s.name not in self.only and s.name != "env":  # env: always (cheap)
            return "not run", "not in --only"
        missing = [m for m in s.modules if importlib.util.find_spec(m) is None]
        if missing:
            return "skipped", f"missing module(s): {', '.join(missing)} (carry them in .whl/, see gpu_check.sh)"
        for dep in s.needs:
            if USABLE[dep] not in self.ctx.result(dep):
                status = self.results.get(dep, {}).get("status", "not run")
                return "skipped", f"needs {dep}, which did not produce its result ({status})"
        left, need = self.left() - RESERVE_S, (60 if s.optional else 15)
        if left < need:
            return "skipped", f"time budget: {max(left, 0):.0f} s left, needs at least {need} s"
        return None

    def run(self, name: str) -> dict:
        s = BY_NAME[name]
        blocked = self.why_not(s)
        if blocked is None:
            limit = min(s.smoke_limit if self.ctx.smoke else s.limit, self.left() - RESERVE_S)
            self.results[name] = {"status": "running", "limit_s": round(limit)}
            self.save()
            self.results[name] = self.spawn(name, limit)
        elif blocked[0] != "not run" or name not in self.results:
            self.results[name] = {"status": blocked[0], "reason": blocked[1]}
        self.results[name]["optional"] = s.optional
        self.say(f"{name}: {brief(self.results[name])}")
        self.save()
        return self.results[name]

    def spawn(self, name: str, limit: float) -> dict:
        (self.ctx.work / f"{name}.json").unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), str(self.ctx.out), "--child", name,
               "--device", self.ctx.device, "--work", str(self.ctx.work)] + (["--smoke"] if self.ctx.smoke else [])
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        env.setdefault("TLEXPORT_CACHE_DIR", str(self.ctx.work / "tlexport-cache"))  # scans, image cache: not ~/.cache
        self.say(f"{name} ... (limit {limit:.0f} s)")
        self.log.write(f"----- {name} -----\n")
        self.log.flush()
        t0 = time.monotonic()
        self.child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # its own group: loader/compile workers die with it
        try:
            rc = self.child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.kill_child()
            return {"status": "timeout", "reason": f"stopped at its {limit:.0f} s limit", "seconds": round(limit, 1)}
        finally:
            self.child = None
        result = self.ctx.result(name)
        if not result:
            result = {"status": "error", "reason": f"its process exited with code {rc} and no result (see log.txt)"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        return result

    def kill_child(self) -> None:
        if self.child is None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.child.pid, sig)
                self.child.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def exit_code(self) -> int:
        if is_cuda(self.ctx.device) and self.results.get("env", {}).get("cuda") is False:
            return 3
        for r in self.results.values():
            optional_skip = r.get("optional") and r["status"] == "skipped"
            if r.get("status") in FAILING and not optional_skip:
                return 1
        return 0

    def save(self, final: bool = False) -> None:
        meta = {"device": self.ctx.device, "smoke": self.ctx.smoke, "budget_s": self.args.budget,
                "elapsed_s": round(time.monotonic() - START, 1), "only": self.args.only,
                "exit_code": self.exit_code() if final else None}
        data = {"_meta": meta, **self.results}
        write_atomic(self.ctx.out / "results.json", json.dumps(data, indent=2, default=str) + "\n")
        write_atomic(self.ctx.out / "summary.md", summary_markdown(self.results, meta))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def brief(r: dict) -> str:
    if r.get("status") not in ("ok", None):
        return f"{r['status'].upper()}: {r.get('reason', '')}"[:300]
    keys = ("images_per_s", "vs_synthetic", "passed", "export_s", "best_val_accuracy", "fp32", "images")
    shown = ", ".join(f"{k}={r[k]}" for k in keys if k in r)
    return f"ok ({r.get('seconds', '?')} s){': ' + shown if shown else ''}"


# ---- summary.md ---------------------------------------------------------------------------------
def fmt(v, digits: int = 1) -> str:
    """A table cell: numbers rounded, missing values as a dash (never "None")."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v).replace("|", "/").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c.replace("|", "/") for c in r) + " |"
                  for r in rows]


def _headline(results: dict) -> list[str]:
    def r(name):
        x = results.get(name, {})
        return x if x.get("status") == "ok" else None

    rows = []
    syn, real, par = r("train_syn"), results.get("train_real", {}), results.get("parity", {})
    rows.append(["train img/s, synthetic (AMP, channels-last)",
                 f"{fmt(syn['images_per_s'])} ({syn['arch']} b{syn['batch']} {syn['amp']})" if syn else _why(results, "train_syn"),
                 f">= {TRAIN_TARGET}"])
    rows.append(["train img/s, JPEG loader",
                 f"{fmt(real['images_per_s'])} ({fmt(real.get('vs_synthetic'), 2)} of synthetic, {real['workers']} workers)"
                 if "images_per_s" in real else _why(results, "train_real"), f">= {REAL_RATIO_TARGET:.0%} of synthetic"])
    if "passed" in par:
        compared = [x for x in par["results"] if not x.get("skipped_reason")]
        verdict = (f"{'passed' if par['passed'] else 'FAILED'} ({len(compared)} compared, "
                   f"{len(par['results']) - len(compared)} skipped, {fmt(par.get('images'))} images)")
        rows.append(["parity on the device", verdict, "passed"])
    else:
        rows.append(["parity on the device", _why(results, "parity"), "passed"])
    for b in (1, 256, 4):
        cells = [x for x in results.get("bench", {}).get("results", []) if x["batch_size"] == b and not x["error"]]
        if cells:
            best = min(cells, key=lambda x: x["p50_ms"])
            rows.append([f"bench batch {b}, best runtime (numpy in/out)",
                         f"{best['runtime']}/{best['precision']}: p50 {fmt(best['p50_ms'], 3)} ms, {fmt(best['throughput'])} img/s", ""])
    for x in results.get("feeding", {}).get("results", [])[1:]:
        rows.append([f"train img/s fed from phone photos: {x['feeder']}",
                     f"{fmt(x['images_per_s'])} ({fmt(x.get('vs_synthetic'), 2)} of synthetic at batch "
                     f"{results['feeding'].get('batch')})" if "images_per_s" in x
                     else f"error: {x.get('error')}", f">= {REAL_RATIO_TARGET:.0%} of synthetic"])
    for name in ("infer_dev", "infer_dev_compiled"):
        for x in results.get(name, {}).get("results", []):
            rows.append([f"{results[name]['runtime']}, on-device input, batch {x['batch']}",
                         f"p50 {fmt(x['p50_ms'], 3)} ms, {fmt(x['images_per_s'])} img/s", INFER_TARGETS])
    return ["## Headline", ""] + _table(["measure", "value", "target"], rows)


def _why(results: dict, name: str) -> str:
    r = results.get(name)
    if not r:
        return "not run"
    return f"{r.get('status')}: {r.get('reason', '')}"


def _details(results: dict) -> list[str]:
    out = []
    par = results.get("parity", {}).get("results")
    if par:
        rows = [[x["runtime"], x["precision"], x["device"]] + (
            [f"skipped: {x['skipped_reason']}", "", ""] if x.get("skipped_reason") else
            [fmt(x.get("max_abs"), 6), fmt(x.get("top1_agreement")),
             "passed" if x.get("passed") else "FAILED: " + "; ".join(x.get("failures") or [])])
            for x in par]
        out += ["", "## Parity", ""] + _table(["runtime", "precision", "device", "max |diff|", "top-1 %", "result"], rows)
    bench = results.get("bench", {})
    if bench.get("results") or bench.get("skipped"):
        rows = [[x["runtime"], x["precision"], x["device"], x["batch_size"]] + (
            [f"error: {x['error']}", "", ""] if x["error"] else
            [fmt(x["p50_ms"], 3), fmt(x["throughput"]), fmt(x["speedup_vs_eager"], 2)]) for x in bench.get("results", [])]
        rows += [[s["runtime"], s["precision"], s["device"], "all", f"skipped: {s['reason']}", "", ""]
                 for s in bench.get("skipped", [])]
        out += ["", "## Bench (numpy in/out, host copies included)", ""]
        out += _table(["runtime", "precision", "device", "batch", "p50 ms", "img/s", "vs eager"], rows)
    return out


def summary_markdown(results: dict, meta: dict) -> str:
    env = results.get("env", {})
    gpu = ((env.get("environment") or {}).get("gpu") or {})
    title = "GPU check" + (" — CPU SMOKE RUN (tiny sizes; not GPU numbers)" if meta.get("smoke") else "")
    machine = (f"device {fmt(meta.get('device'))}; GPU {fmt(gpu.get('name'))} (driver {fmt(gpu.get('driver'))}, "
               f"CUDA {fmt(gpu.get('cuda'))}); torch {fmt((env.get('environment') or {}).get('versions', {}).get('torch'))}; "
               f"missing modules: {', '.join(env.get('missing_modules') or []) or 'none'}; "
               f"/dev/shm free {fmt(env.get('dev_shm_free_gib'))} GiB")
    timing = (f"elapsed {fmt(meta.get('elapsed_s'))} s of a {fmt(meta.get('budget_s'))} s budget; "
              f"exit code {fmt(meta.get('exit_code'))}")
    lines = [f"# {title}", "", machine, timing, ""]
    lines += _headline(results)
    rows = [[name, r.get("status"), "optional" if r.get("optional") else "", fmt(r.get("seconds")),
             r.get("reason", "") if r.get("status") != "ok" else brief(r)] for name, r in results.items()]
    lines += ["", "## Sections", ""] + _table(["section", "status", "", "seconds", "result / reason"], rows)
    lines += _details(results)
    return "\n".join(lines) + "\n"


# ---- entry point ----------------------------------------------------------------------------------
def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--device", help="cuda, cuda:N or cpu (default cuda; cpu with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to test this script on a CPU")
    ap.add_argument("--budget", type=float, help="seconds for the whole check (default 480; 2400 with --smoke)")
    ap.add_argument("--only", help="comma-separated sections to run besides env (the results of earlier "
                    "sections in --work are reused)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "tlexport-gpu-check",
                    help="scratch folder kept between calls on the same machine (data, run, export)")
    ap.add_argument("--summarize", action="store_true", help="only rewrite summary.md from results.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.budget = args.budget or (2400.0 if args.smoke else 480.0)
    if args.device != "cpu" and not is_cuda(args.device):
        ap.error(f"--device {args.device}: use cuda, cuda:N or cpu")
    if args.only:
        unknown = set(args.only.split(",")) - set(BY_NAME)
        if unknown:
            ap.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(BY_NAME)}")
    return args


def mark_stopped(results: dict, why: str) -> None:
    """After a stop from outside: the running section timed out, the later ones were not reached
    (listed all the same, so no section silently disappears)."""
    for r in results.values():
        if r.get("status") == "running":
            r.update(status="timeout", reason=why)
    for s in SECTIONS:
        results.setdefault(s.name, {"status": "skipped", "reason": "not reached: " + why, "optional": s.optional})


def summarize_only(out: Path) -> int:
    """After a hard stop: mark the section that was running, rewrite summary.md."""
    path = out / "results.json"
    data = json.loads(path.read_text()) if path.is_file() else {"_meta": {}}
    meta = data.pop("_meta", {})
    mark_stopped(data, "gpu_check.sh's hard time limit stopped the whole check here")
    meta["exit_code"] = 1
    write_atomic(path, json.dumps({"_meta": meta, **data}, indent=2) + "\n")
    write_atomic(out / "summary.md", summary_markdown(data, meta))
    return 1


def main(argv=None) -> int:
    args = parse(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args.device, args.smoke, args.work, args.outdir.resolve())
    if args.child:
        return child_main(args.child, ctx)
    if args.summarize:
        return summarize_only(args.outdir)
    runner = Runner(args, ctx)

    def stop(signum, _frame):  # the shell's hard limit: keep what was measured
        runner.kill_child()
        mark_stopped(runner.results, f"the whole check was stopped (signal {signum})")
        runner.save(final=True)
        sys.exit(1)

    signal.signal(signal.SIGTERM, stop)
    for s in SECTIONS:
        r = runner.run(s.name)
        if s.name == "env" and is_cuda(ctx.device) and r.get("cuda") is False:
            runner.say("no CUDA GPU visible to torch: the other sections need one (exit 3)")
            for rest in SECTIONS[1:]:
                runner.results[rest.name] = {"status": "skipped", "reason": "no CUDA GPU visible to torch",
                                             "optional": rest.optional}
            break
    runner.save(final=True)
    print("\n" + (ctx.out / "summary.md").read_text())
    return runner.exit_code()


if __name__ == "__main__":
    sys.exit(main())
