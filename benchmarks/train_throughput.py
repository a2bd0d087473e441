"""Training throughput (images/s) of tlexport's training step vs a plain loop of the original recipe.

Both run in the same process on the same generated JPEG files, same architecture, batch 32,
224 px, full fine-tuning (every layer trains), so the ratio is what tlexport's choices buy:

- plain:    PIL load, Resize((224, 224)), ToTensor, Normalize((0.5,)*3, (0.5,)*3), SGD lr 1e-3
            momentum 0.9, contiguous NCHW, fp32, DataLoader without workers (the original recipe)
- tlexport: tlexport.training's own Dataset / transforms / DataLoader (make_loaders) and step
            (the training engine): channels-last, mixed precision + cudnn.benchmark on CUDA, loader workers
            where the device has cores to spare; discriminative LR off (full fine-tuning)

Extra variants (`--variants`) isolate single changes so a speed-up can be attributed:
plain-cl (plain + channels-last), plain-draft (plain + JPEG draft-mode decoding),
tlexport-w2 (tlexport with 2 loader workers), tlexport-compile (tlexport + torch.compile),
tlexport-fp32 / tlexport-bf16 (tlexport with `--precision fp32` / `bf16`; plain `tlexport` is
`--precision auto`, whose choice is printed).

Each variant: `--warmup-steps` untimed steps, then `--steps` timed steps (loader included).

Two more sections (`--sections`), each whole training runs through tlexport itself:
- stages: one run with `--freeze-epochs 2 --epochs 3`; the second head epoch (on cached features,
  the first one fills the cache) against the full fine-tuning epoch, from its metrics.csv.
- ddp: `tlexport train --nproc 1` and `--nproc 2` on the same data; the seconds of the last epoch
  (the first includes start-up), and the val accuracy each reaches.

Usage:
    python benchmarks/train_throughput.py --archs resnet18,resnet50 --steps 6 --json out.json
    python benchmarks/train_throughput.py --smoke        # seconds: checks that every part runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import torch  # noqa: E402

BATCH = 32
SIZE = 224


def _set_size(size: int) -> None:
    global SIZE
    SIZE = size


def make_jpegs(root: Path, per_class: int, size: int) -> Path:
    """A JPEG dataset like a camera folder: 4 classes of `size`-px drawn shapes."""
    from tlexport.data.synth import make_dataset

    return make_dataset(root, classes=("circle", "square", "triangle", "star"), per_class=per_class,
                        size=size, fmt="jpg", seed=1)


class PlainDataset(torch.utils.data.Dataset):
    """The original recipe's data path: PIL open -> RGB -> fixed-size transform."""

    def __init__(self, samples, draft: bool = False):
        from torchvision import transforms as T

        self.samples, self.draft = samples, draft
        self.tf = T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        img = Image.open(path)
        if self.draft:  # let libjpeg decode at 1/2, 1/4 ... scale when the file is much bigger
            img.draft("RGB", (SIZE, SIZE))
        return self.tf(img.convert("RGB")), label


def _loop(model, loader, step_fn, steps: int):
    """Run `steps` optimisation steps cycling over `loader`; return (images, seconds)."""
    images, start, done = 0, time.perf_counter(), 0
    while done < steps:
        for x, y in loader:
            step_fn(x, y)
            images += y.numel()
            done += 1
            if done >= steps:
                break
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return images, time.perf_counter() - start


def plain_variant(samples, n_classes, arch, device, warmup, steps, channels_last=False, draft=False):
    """images/s of the original recipe (optionally with one change)."""
    from torchvision import models

    model = models.get_model(arch, weights=None, num_classes=n_classes).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(PlainDataset(samples, draft), batch_size=BATCH, shuffle=True)

    def step(x, y):
        x, y = x.to(device).contiguous(memory_format=fmt), y.to(device)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()

    _loop(model, loader, step, warmup)
    return _loop(model, loader, step, steps)


class _StepCounter:
    """tlexport.training.loop.Progress that only counts steps and images."""

    images = steps = 0

    def message(self, text): ...
    def start_epoch(self, *a): ...
    def end_epoch(self, *a): ...

    def step(self, images, *a):
        self.images += images
        self.steps += 1


def tlexport_variant(data_root, arch, device, warmup, steps, workers=None, compile_model=False, precision="auto"):
    """images/s of tlexport.training's own loaders and engine (full fine-tuning)."""
    from tlexport import models
    from tlexport.data.folders import scan
    from tlexport.training.config import TrainConfig
    from tlexport.training.engine import Engine
    from tlexport.training.inputs import image_batches, make_loaders
    from tlexport.training.schedule import make_optimizer
    from tlexport.training.torchutil import resolve_precision

    cfg = TrainConfig(data=str(data_root), arch=arch, weights="none", batch_size=BATCH, image_size=SIZE,
                      backbone_lr_mult=1.0, workers=workers, device=device.type)
    scanned = scan(data_root, verify=False)
    pre = models.default_preprocess(arch).with_crop(SIZE)
    loader, _, _ = make_loaders(scanned, pre, cfg, device)
    model = models.create(arch, len(scanned.classes)).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    dtype, why = resolve_precision(device, precision)
    print(f"  tlexport --precision {precision}: {dtype} ({why})", flush=True)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run_model = torch.compile(model) if compile_model else model
    model.train()
    crit = torch.nn.CrossEntropyLoss()
    counter = _StepCounter()
    constant_lr = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)

    engine = Engine(opt, crit, scheduler=constant_lr, scaler=scaler, dtype=dtype)

    def run(n):
        """n steps through the training engine (restarting the loader when an epoch ends)."""
        counter.images, counter.steps = 0, 0
        start = time.perf_counter()
        while counter.steps < n:
            left = n - counter.steps
            engine.epoch(run_model, image_batches(loader, device, left), left, counter)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return counter.images, time.perf_counter() - start

    run(warmup)
    return run(steps)


VARIANTS = ("plain", "tlexport", "plain-cl", "plain-draft", "tlexport-w2", "tlexport-compile",
            "tlexport-fp32", "tlexport-bf16")


def measure(arch, variant, data_root, samples, n_classes, device, warmup, steps):
    if variant.startswith("plain"):
        return plain_variant(samples, n_classes, arch, device, warmup, steps,
                             channels_last=variant == "plain-cl", draft=variant == "plain-draft")
    precision = variant.split("-")[1] if variant in ("tlexport-fp32", "tlexport-bf16") else "auto"
    return tlexport_variant(data_root, arch, device, warmup, steps,
                            workers=2 if variant == "tlexport-w2" else None,
                            compile_model=variant == "tlexport-compile", precision=precision)


# ---- whole runs: head stage vs full epochs, 1 vs 2 processes ------------------------------------
def _train_args(data_root, arch, device, epochs, max_steps):
    args = ["--data", str(data_root), "--arch", arch, "--weights", "none", "--batch-size", str(BATCH),
            "--image-size", str(SIZE), "--epochs", str(epochs), "--device", device.type, "--quiet"]
    return args + (["--max-steps", str(max_steps)] if max_steps else [])


def _metrics(run_dir: Path) -> list[dict]:
    import csv

    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def stages(data_root, arch, device, max_steps, work: Path) -> dict:
    """Seconds of a head epoch on cached features vs a full fine-tuning epoch, in one run."""
    from click.testing import CliRunner

    from tlexport.cli import cli

    run = work / f"stages-{arch}"
    r = CliRunner().invoke(cli, ["train", *_train_args(data_root, arch, device, 3, max_steps), "--freeze-epochs", "2",
                                 "--out", str(run)])
    if r.exit_code:
        raise SystemExit(r.output)
    rows = _metrics(run)
    head, full = float(rows[1]["seconds"]), float(rows[2]["seconds"])
    return {"arch": arch, "section": "stages", "first_head_epoch_s": float(rows[0]["seconds"]),
            "head_epoch_s": head, "full_epoch_s": full, "full_over_head": round(full / max(head, 1e-9), 1)}


def ddp(data_root, arch, device, max_steps, work: Path, epochs: int = 2) -> list[dict]:
    """The last epoch's seconds and val accuracy with 1 and with 2 processes (`--nproc`)."""
    import subprocess

    rows = []
    for nproc in (1, 2):
        run = work / f"ddp{nproc}-{arch}"
        cmd = [sys.executable, "-m", "tlexport", "train", *_train_args(data_root, arch, device, epochs, max_steps),
               "--nproc", str(nproc), "--out", str(run)]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1])
        last = _metrics(run)[-1]
        rows.append({"arch": arch, "section": "ddp", "nproc": nproc, "epoch_s": float(last["seconds"]),
                     "val_acc": float(last["val_acc"]), "images_per_s": float(last["images_per_s"])})
        print(f"{arch:9s} ddp nproc={nproc}  {rows[-1]['epoch_s']:.1f} s/epoch  val acc {rows[-1]['val_acc']:.3f}",
              flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnet18,resnet50")
    ap.add_argument("--variants", default="plain,tlexport", help=f"comma list from {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--images", type=int, default=48, help="JPEG files per class (4 classes)")
    ap.add_argument("--source-size", type=int, default=320, help="side of the generated JPEGs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", help="existing image folder (default: generate JPEGs in a temp dir)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sections", default="throughput,stages,ddp", help="comma list of throughput, stages, ddp")
    ap.add_argument("--image-size", type=int, default=SIZE, help="crop size fed to the network")
    ap.add_argument("--max-steps", type=int, help="stages/ddp: cap on steps per epoch")
    ap.add_argument("--smoke", action="store_true",
                    help="a seconds-long check that every part runs (resnet18, 64 px, 1 step, tiny data)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.steps, args.warmup_steps, args.images, args.source_size = "resnet18", 1, 1, 8, 80
        args.image_size, args.max_steps = 64, 1
        args.variants = "plain,tlexport,tlexport-fp32,tlexport-bf16"
    _set_size(args.image_size)
    device = torch.device(args.device)
    from tlexport.data.folders import scan
    from tlexport.envinfo import environment

    tmp = tempfile.TemporaryDirectory(prefix="tlexport-train-bench-")
    data_root = Path(args.data) if args.data else make_jpegs(Path(tmp.name), args.images, args.source_size)
    scanned = scan(data_root, verify=False)
    samples = scanned.train + scanned.val
    rows = []
    sections = args.sections.split(",")
    for arch in args.archs.split(",") if "throughput" in sections else ():
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                ap.error(f"unknown variant {variant}")
            images, seconds = measure(arch, variant, data_root, samples, len(scanned.classes), device,
                                      args.warmup_steps, args.steps)
            rows.append({"arch": arch, "variant": variant, "images": images, "seconds": round(seconds, 3),
                         "images_per_s": round(images / seconds, 2)})
            print(f"{arch:9s} {variant:17s} {images / seconds:9.1f} img/s  ({images} images, {seconds:.1f} s)",
                  flush=True)
    base = {r["arch"]: r["images_per_s"] for r in rows if r["variant"] == "plain"}
    for r in rows:
        r["speedup_vs_plain"] = round(r["images_per_s"] / base[r["arch"]], 3) if r["arch"] in base else None
    runs_tmp = tempfile.TemporaryDirectory(prefix="tlexport-train-bench-runs-")  # never inside the data folder
    work = Path(runs_tmp.name)
    for arch in args.archs.split(","):
        if "stages" in sections:
            rows.append(stages(data_root, arch, device, args.max_steps, work))
            print(f"{arch:9s} stages: head epoch {rows[-1]['head_epoch_s']:.2f} s, full epoch "
                  f"{rows[-1]['full_epoch_s']:.2f} s ({rows[-1]['full_over_head']}x)", flush=True)
        if "ddp" in sections:
            rows += ddp(data_root, arch, device, args.max_steps, work)
    summary = {"environment": environment(), "device": str(device), "batch_size": BATCH, "image_size": SIZE,
               "steps": args.steps, "warmup_steps": args.warmup_steps, "results": rows,
               "host": platform.node(), "uptime_load": os.getloadavg()}
    for r in rows:
        if r.get("speedup_vs_plain") is not None:
            print(f"{r['arch']:9s} {r['variant']:17s} {r['speedup_vs_plain']:.2f}x vs plain")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
