"""Fine-tuning: config, data loaders, the loop, evaluation per epoch, checkpoints and resume."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import __version__
from .data import ImageDataset, ScanResult, collate_skip_none, scan
from .errors import RuntimeUnavailable, TlexportError, UsageError
from .fileio import atomic_path, write_json, write_text
from .models import ARCHS, build, default_preprocess
from .preprocess import Preprocess


@dataclass
class TrainConfig:
    """Every option of `tlexport train`; stored in run.json so `--resume` can rebuild the run."""

    data: str
    arch: str = "resnet50"
    weights: str = "imagenet"  # imagenet | none | path to .safetensors/.pt/.pth
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    scheduler: str = "cosine"  # cosine | step
    warmup_epochs: float = 0.0
    step_size: int = 0  # epochs per LR step (0: a third of the run); gamma 0.1
    freeze_epochs: int = 0
    backbone_lr_mult: float = 0.1
    augment: bool = True
    crop_scale: float = 0.08  # smallest area fraction RandomResizedCrop keeps (torchvision's 0.08)
    val_fraction: float = 0.2
    image_size: int | None = None  # crop size; None keeps the weights' (224)
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    max_steps: int | None = None  # cap on steps per epoch (smoke runs, benchmarks)
    out: str | None = None
    name: str | None = None

    def validate(self) -> None:
        """Raise UsageError for options that cannot work, before anything is written."""
        if self.arch not in ARCHS:
            raise UsageError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.freeze_epochs < self.epochs or self.freeze_epochs == 0,
             f"--freeze-epochs ({self.freeze_epochs}) must be smaller than --epochs ({self.epochs})"),
            (self.backbone_lr_mult >= 0, "--backbone-lr-mult must be >= 0"),
            (0 < self.crop_scale <= 1, "--crop-scale must be in (0, 1]"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.optimizer in ("sgd", "adamw"), f"unknown --optimizer {self.optimizer!r}"),
            (self.scheduler in ("cosine", "step"), f"unknown --scheduler {self.scheduler!r}"),
            (self.image_size is None or self.image_size >= 16, "--image-size must be at least 16"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.workers is None or self.workers >= 0, "--workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass
class EpochStats:
    epoch: int
    phase: str  # "head" while the backbone is frozen, else "full"
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    images_per_s: float
    seconds: float


@dataclass
class TrainResult:
    run_dir: Path
    classes: list[str]
    best_val_accuracy: float
    best_epoch: int
    epochs: int
    weights_file: Path
    weights_source: str
    device: str
    history: list[EpochStats] = field(default_factory=list)
    skipped: int = 0

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "classes": self.classes,
            "weights_file": str(self.weights_file),
            "weights_source": self.weights_source,
            "device": self.device,
            "skipped_files": self.skipped,
            "history": [asdict(h) for h in self.history],
        }


class Progress:
    """Callbacks for long work; the CLI subclasses it with rich bars. Library default: silent."""

    def message(self, text: str) -> None: ...
    def start_epoch(self, epoch: int, epochs: int, steps: int, phase: str) -> None: ...
    def step(self, images: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


# ---- device -------------------------------------------------------------------------------------
def resolve_device(spec: str):
    """auto | cpu | cuda | cuda:N -> torch.device, with a clear error when CUDA is absent."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeUnavailable(f"--device {spec}: no CUDA GPU is available here; use --device cpu")
        index = int(spec.split(":")[1]) if ":" in spec and spec.split(":")[1].isdigit() else 0
        if index >= torch.cuda.device_count():
            raise RuntimeUnavailable(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    raise UsageError(f"unknown --device {spec!r}; use auto, cpu, cuda or cuda:N")


def amp_dtype(device):
    """Mixed precision on CUDA: bf16 where the GPU has it (no scaler needed), else fp16."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---- data ---------------------------------------------------------------------------------------
def make_loaders(scanned: ScanResult, pre: Preprocess, cfg: TrainConfig, device):
    """Train loader (augmented, shuffled by a per-epoch seeded sampler) and val loader (eval
    transform). Returns (train_loader, val_loader, sampler_generator)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    common = dict(
        batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    if workers > 0:
        common["prefetch_factor"] = 4
    train_ds = ImageDataset(scanned.train, pre.train_transform(cfg.augment, cfg.crop_scale))
    val_ds = ImageDataset(scanned.val, pre.eval_transform())
    train = DataLoader(train_ds, sampler=RandomSampler(train_ds, generator=generator), drop_last=False, **common)
    val = DataLoader(val_ds, shuffle=False, **common)
    return train, val, generator


def default_workers(device) -> int:
    """Loader processes: several on a GPU box; on a small CPU box the model needs the cores."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, cpus)
    return 0 if cpus <= 2 else min(4, cpus // 2)


# ---- schedule -----------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at global `step`: linear warm-up, then cosine or step decay."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.scheduler == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    step_epochs = cfg.step_size or max(1, cfg.epochs // 3)
    return 0.1 ** ((step // max(1, steps_per_epoch)) // step_epochs)


def backbone_lr(cfg: TrainConfig) -> float:
    """Discriminative LR belongs to freeze-then-unfreeze fine-tuning of a pretrained body: after
    `--freeze-epochs`, the body learns at lr x backbone_lr_mult. Without a freeze phase (the
    original recipe) or without pretrained weights, the body learns at the full lr."""
    if cfg.freeze_epochs > 0 and cfg.weights != "none":
        return cfg.lr * cfg.backbone_lr_mult
    return cfg.lr


def make_optimizer(model, cfg: TrainConfig):
    """Two parameter groups: the new head at lr, the body at `backbone_lr(cfg)`."""
    import torch

    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    body_lr = backbone_lr(cfg)
    groups = [
        {"params": body, "lr": body_lr, "base_lr": body_lr, "name": "backbone"},
        {"params": head, "lr": cfg.lr, "base_lr": cfg.lr, "name": "head"},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def set_backbone_frozen(model, frozen: bool) -> None:
    """Freeze or unfreeze everything but `fc`. A frozen body also keeps its BatchNorm statistics."""
    for name, p in model.named_parameters():
        if not name.startswith("fc."):
            p.requires_grad_(not frozen)


def set_train_mode(model, frozen: bool) -> None:
    model.train()
    if frozen:
        for name, module in model.named_children():
            if name != "fc":
                module.eval()


# ---- one epoch ----------------------------------------------------------------------------------
def train_step(model, x, y, optimizer, scaler, criterion, dtype):
    """One optimisation step under autocast (`dtype` None: plain fp32), with the gradient scaler
    that fp16 needs. Returns (loss, logits)."""
    import torch

    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)
        loss = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, logits


def train_epoch(model, loader, optimizer, scaler, criterion, device, dtype, schedule, progress):
    """One pass over the training data. `schedule(step_in_epoch)` sets the LR before each step.
    Returns (mean loss, accuracy, images/s)."""
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if schedule(i) is False:
            break
        if batch is None:  # every file of this batch became unreadable since the scan
            continue
        x, y = _to_device(batch, device)
        loss, logits = train_step(model, x, y, optimizer, scaler, criterion, dtype)
        n = y.numel()
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        rate = seen / max(time.perf_counter() - start, 1e-9)
        progress.step(n, loss_sum / seen, correct / seen, rate)
    elapsed = time.perf_counter() - start
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen / max(elapsed, 1e-9)


def predict_logits(model, loader, device, dtype=None):
    """Logits and labels over a loader, in eval mode, as float32 CPU tensors."""
    import torch

    model.eval()
    outs, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            if batch is None:
                continue
            x, y = _to_device(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs.append(model(x).float().cpu())
            labels.append(y.cpu())
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)


def _to_device(batch, device):
    import torch

    x, y = batch
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


# ---- run directory ------------------------------------------------------------------------------
def default_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser()
    name = cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


def check_new_run_dir(path: Path) -> None:
    """Refuse a file, or a folder that already holds a run (nothing is ever overwritten)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a folder")
    if (path / "run.json").exists() or (path / "checkpoint.pt").exists():
        raise UsageError(f"{path} already holds a run; use --resume {path} or choose another --out")


def versions() -> dict:
    import torch
    import torchvision

    return {
        "tlexport": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def save_weights(model, path: Path, meta: dict) -> None:
    """best/last weights as safetensors (plain contiguous tensors, strict-loadable by torchvision)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(state, metadata={k: json.dumps(v) for k, v in meta.items()}))


def save_checkpoint(path: Path, model, optimizer, scaler, state: dict) -> None:
    """Everything needed to resume, as tensors and plain types (loads with weights_only=True)."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": list(random.getstate()[1]),
            "numpy": torch.from_numpy(np_state[1].astype("int64")),
            "numpy_pos": int(np_state[2]),
        },
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def restore_rng(rng: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((3, tuple(rng["python"]), None))
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype("uint32"), rng["numpy_pos"], 0, 0.0))


def write_metrics(run_dir: Path, history: list[EpochStats]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(EpochStats)])
    writer.writeheader()
    for row in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(row).items()})
    write_text(run_dir / "metrics.csv", buffer.getvalue())


def plot_curves(run_dir: Path, history: list[EpochStats]) -> Path | None:
    """curves.png: loss and accuracy per epoch (skipped quietly if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [h.epoch for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    ax1.plot(epochs, [h.val_loss for h in history], "o-", label="val")
    ax1.set(title="loss", xlabel="epoch")
    ax2.plot(epochs, [h.train_acc for h in history], "o-", label="train")
    ax2.plot(epochs, [h.val_acc for h in history], "o-", label="val")
    ax2.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = run_dir / "curves.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# ---- the run ------------------------------------------------------------------------------------
class _Session:
    """State of one training run: built from a config (new run) or a checkpoint (resume)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: Progress, pretrained: bool = True):
        """pretrained=False skips loading cfg.weights (a resumed run takes the checkpoint's)."""
        import torch

        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        progress.message(f"scanning {cfg.data} ...")
        self.scanned = scan(cfg.data, cfg.val_fraction, cfg.seed)
        self.pre = default_preprocess(cfg.arch)
        if cfg.image_size:
            self.pre = self.pre.with_crop(cfg.image_size)
        self.model, self.source = build(cfg.arch, len(self.scanned.classes), cfg.weights if pretrained else "none")
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.dtype = amp_dtype(self.device)
        use_scaler = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.train_loader, self.val_loader, self.generator = make_loaders(self.scanned, self.pre, cfg, self.device)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.epoch, self.step, self.best_acc, self.best_epoch = 0, 0, -1.0, 0
        self.history: list[EpochStats] = []

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.train_loader)
        return min(n, self.cfg.max_steps) if self.cfg.max_steps else n

    def resume_from(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_acc, self.best_epoch = float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        self.history = [EpochStats(**h) for h in ckpt["history"]]
        restore_rng(ckpt["rng"])

    def run_meta(self) -> dict:
        return {
            "tlexport_version": __version__,
            "arch": self.cfg.arch,
            "classes": self.scanned.classes,
            "preprocess": self.pre.to_dict(),
            "weights": self.source.to_dict(),
            "data": {
                "root": str(self.scanned.root.resolve()), "layout": self.scanned.layout,
                "train_images": len(self.scanned.train), "val_images": len(self.scanned.val),
                "skipped": len(self.scanned.skipped),
            },
            "device": str(self.device),
            "mixed_precision": str(self.dtype).replace("torch.", "") if self.dtype else None,
            "metrics": {
                "best_val_accuracy": max(self.best_acc, 0.0), "best_epoch": self.best_epoch,
                "epochs_done": self.epoch,
                "last_val_accuracy": self.history[-1].val_acc if self.history else None,
            },
            "options": asdict(self.cfg),
            "versions": versions(),
        }

    def write_start_files(self) -> None:
        scanned = self.scanned
        write_json(self.run_dir / "split.json", scanned.split_record())
        if scanned.skipped:
            scanned.write_skipped(self.run_dir / "skipped.txt")
            self.progress.message(
                f"warning: skipped {len(scanned.skipped)} unreadable file(s); see {self.run_dir / 'skipped.txt'}"
            )
        write_json(self.run_dir / "run.json", self.run_meta())

    def weights_meta(self) -> dict:
        return {"arch": self.cfg.arch, "classes": self.scanned.classes, "preprocess": self.pre.to_dict()}

    def run_epoch(self) -> EpochStats:
        cfg, epoch = self.cfg, self.epoch
        frozen = epoch < cfg.freeze_epochs
        set_backbone_frozen(self.model, frozen)
        set_train_mode(self.model, frozen)
        phase = "head" if frozen else "full"
        self.generator.manual_seed(cfg.seed * 1000 + epoch)  # same order on resume
        total = cfg.epochs * self.steps_per_epoch
        warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        lrs = {}

        def schedule(i):
            if cfg.max_steps and i >= cfg.max_steps:
                return False
            factor = lr_factor(self.step, total, warmup, cfg, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = 0.0 if frozen and group["name"] == "backbone" else group["base_lr"] * factor
                lrs[group["name"]] = group["lr"]
            self.step += 1
            return True

        self.progress.start_epoch(epoch + 1, cfg.epochs, self.steps_per_epoch, phase)
        start = time.perf_counter()
        loss, acc, rate = train_epoch(self.model, self.train_loader, self.optimizer, self.scaler,
                                      self.criterion, self.device, self.dtype, schedule, self.progress)
        val_loss, val_acc = self.validate()
        stats = EpochStats(epoch + 1, phase, lrs.get("head", 0.0), loss, acc, val_loss, val_acc,
                           rate, time.perf_counter() - start)
        self.progress.end_epoch(stats)
        return stats

    def validate(self) -> tuple[float, float]:
        import torch

        logits, labels = predict_logits(self.model, self.val_loader, self.device, self.dtype)
        if labels.numel() == 0:
            raise TlexportError("no validation image could be read")
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return loss, (logits.argmax(1) == labels).float().mean().item()

    def finish_epoch(self, stats: EpochStats) -> None:
        self.history.append(stats)
        self.epoch += 1
        meta = self.weights_meta()
        if stats.val_acc > self.best_acc:
            self.best_acc, self.best_epoch = stats.val_acc, stats.epoch
            save_weights(self.model, self.run_dir / "best.safetensors", meta)
        save_weights(self.model, self.run_dir / "last.safetensors", meta)
        state = {"epoch": self.epoch, "step": self.step, "best_acc": self.best_acc,
                 "best_epoch": self.best_epoch, "history": [asdict(h) for h in self.history]}
        save_checkpoint(self.run_dir / "checkpoint.pt", self.model, self.optimizer, self.scaler, state)
        write_metrics(self.run_dir, self.history)
        write_json(self.run_dir / "run.json", self.run_meta())

    def loop(self) -> TrainResult:
        while self.epoch < self.cfg.epochs:
            self.finish_epoch(self.run_epoch())
        plot_curves(self.run_dir, self.history)
        return TrainResult(
            run_dir=self.run_dir, classes=self.scanned.classes, best_val_accuracy=self.best_acc,
            best_epoch=self.best_epoch, epochs=self.epoch, weights_file=self.run_dir / "best.safetensors",
            weights_source=self.source.kind, device=str(self.device), history=self.history,
            skipped=len(self.scanned.skipped),
        )


def train(cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Fine-tune `cfg.arch` on `cfg.data` and write a run directory.

    Args:
        cfg: all options (see TrainConfig).
        progress: optional callbacks for progress display.
    Returns:
        TrainResult with the run directory, best val accuracy and per-epoch history.
    """
    cfg.validate()
    progress = progress or Progress()
    run_dir = default_run_dir(cfg)
    check_new_run_dir(run_dir)
    session = _Session(cfg, run_dir, progress)  # scans and builds before any file is written
    run_dir.mkdir(parents=True, exist_ok=True)
    session.write_start_files()
    return session.loop()


def resume(run_dir: Path | str, epochs: int | None = None, progress: Progress | None = None) -> TrainResult:
    """Continue a run from its checkpoint.pt with the options stored in run.json.

    Args:
        epochs: a new total number of epochs (to extend a finished run); default the stored one.
    """
    import torch

    run_dir = Path(run_dir).expanduser()
    ckpt_file, meta_file = run_dir / "checkpoint.pt", run_dir / "run.json"
    if not ckpt_file.is_file() or not meta_file.is_file():
        raise UsageError(f"{run_dir} has no checkpoint.pt and run.json to resume from")
    options = json.loads(meta_file.read_text())["options"]
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in {f.name for f in fields(TrainConfig)}})
    cfg.out = str(run_dir)
    if epochs is not None:
        cfg.epochs = epochs
    cfg.validate()
    try:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TlexportError(f"{ckpt_file} cannot be read ({str(e).splitlines()[0][:150]})") from None
    progress = progress or Progress()
    session = _Session(cfg, run_dir, progress, pretrained=False)
    session.source.kind, session.source.file = _stored_source(meta_file)
    session.resume_from(ckpt)
    if session.epoch >= cfg.epochs:
        raise UsageError(f"{run_dir} already finished {session.epoch} epoch(s); pass --epochs N (> {session.epoch}) to train on")
    progress.message(f"resuming {run_dir} at epoch {session.epoch + 1}/{cfg.epochs}")
    return session.loop()


def _stored_source(meta_file: Path) -> tuple[str, str | None]:
    weights = json.loads(meta_file.read_text()).get("weights", {})
    return weights.get("source", "none"), weights.get("file")
