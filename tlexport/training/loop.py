"""Fine-tuning: data loaders, the loop, evaluation per epoch, checkpoints and resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .. import __version__
from ..data.dataset import ImageDataset, collate_skip_none
from ..data.folders import ScanResult, from_record, scan
from ..data.preprocess import Preprocess
from ..envinfo import versions
from ..errors import TlexportError, UsageError, first_line
from ..fileio import clean_stale, folder_lock, write_json
from ..models import build, default_preprocess
from .checkpoint import restore_rng, save_checkpoint, save_weights, write_metrics
from .config import TrainConfig
from .recipe import (
    EarlyStopping,
    ema_state,
    hard_labels,
    make_criterion,
    make_ema,
    recipe_meta,
    train_collate,
    train_sampler,
)
from .schedule import make_optimizer, make_scheduler
from .torchutil import amp_dtype, predict_logits, resolve_device, set_backbone_frozen, set_train_mode, to_device


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
    raw_val_acc: float | None = None  # with --ema: the raw (non-averaged) weights' val accuracy


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
    notes: list[str] = field(default_factory=list)  # e.g. what --resume found changed on disk
    stopped_epoch: int | None = None  # set when --patience ended the run early

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
            "stopped_epoch": self.stopped_epoch,
            "history": [asdict(h) for h in self.history],
            "notes": self.notes,
        }


class Progress:
    """Callbacks for long work; the CLI subclasses it with rich bars. Library default: silent."""

    def message(self, text: str) -> None: ...
    def start_epoch(self, epoch: int, epochs: int, steps: int, phase: str) -> None: ...
    def step(self, images: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


# ---- data loaders ---------------------------------------------------------------------------------------
def make_loaders(scanned: ScanResult, pre: Preprocess, cfg: TrainConfig, device):
    """Train loader (augmented, shuffled by a per-epoch seeded sampler) and val loader (eval
    transform). Returns (train_loader, val_loader, sampler_generator)."""
    import torch
    from torch.utils.data import DataLoader

    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    common = dict(
        batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    if workers > 0:
        common["prefetch_factor"] = 4
    train_ds = ImageDataset(scanned.train, pre.train_transform(cfg.augment, cfg.crop_scale, cfg.auto_augment))
    val_ds = ImageDataset(scanned.val, pre.eval_transform())
    train = DataLoader(train_ds, sampler=train_sampler(train_ds, cfg, generator), drop_last=False,
                       **{**common, "collate_fn": train_collate(cfg, len(scanned.classes))})
    val = DataLoader(val_ds, shuffle=False, **common)
    return train, val, generator


def default_workers(device) -> int:
    """Loader processes: several on a GPU box; on a small CPU box the model needs the cores."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, cpus)
    return 0 if cpus <= 2 else min(4, cpus // 2)


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


def train_epoch(model, loader, optimizer, scaler, criterion, device, dtype, scheduler, progress,
                max_steps: int | None = None, ema=None):
    """One pass over the training data (at most `max_steps` steps), stepping `scheduler` (and
    updating the `ema` model, if any) after every optimisation step. Labels may be soft (mixup /
    cutmix); accuracy then counts the dominant class of each mix. Returns (mean loss, accuracy,
    images/s)."""
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        # None: every file of this batch became unreadable since the scan. A leftover batch of
        # one image is dropped too: BatchNorm in training mode cannot normalise a single value.
        if batch is None or (len(batch[1]) == 1 and (loader.batch_size or 1) > 1):
            scheduler.step()  # the schedule counts steps of the epoch, not batches that survived
            continue
        x, y = to_device(batch, device)
        try:
            loss, logits = train_step(model, x, y, optimizer, scaler, criterion, dtype)
        except ValueError as e:
            if "more than 1 value per channel" not in str(e):
                raise
            raise UsageError("a training batch of one image is too small for this model at this image size "
                             "(BatchNorm needs more than one value per channel); use --batch-size 2 or more") from None
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        y = hard_labels(y)
        n = y.numel()
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        rate = seen / max(time.perf_counter() - start, 1e-9)
        progress.step(n, loss_sum / seen, correct / seen, rate)
    elapsed = time.perf_counter() - start
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen / max(elapsed, 1e-9)


# ---- run directory ------------------------------------------------------------------------------
def default_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser()
    name = cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


RUN_FILES = ("run.json", "split.json", "checkpoint.pt", "best.safetensors", "last.safetensors",
             "metrics.csv", "curves.png", "skipped.txt")


def check_new_run_dir(path: Path, overwrite: bool = False) -> None:
    """Refuse a file, or a folder that already holds a run unless `overwrite` (only --overwrite
    replaces a run; the message says how to go on, also for a run killed before its first
    checkpoint)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a folder")
    if overwrite or not any((path / name).exists() for name in RUN_FILES[:3]):
        return
    if not (path / "checkpoint.pt").exists():
        raise UsageError(f"{path} holds a run that stopped before its first checkpoint; --resume {path} "
                         "starts it again from scratch with its stored options, --overwrite replaces it")
    raise UsageError(f"{path} already holds a run; use --resume {path} to continue it, --overwrite to "
                     "replace it, or choose another --out")


def _remove_run_files(path: Path) -> None:
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked_run_dir(run_dir: Path):
    """Create (if needed) and lock the run folder for this process; files that killed processes
    left (`.checkpoint.pt.tmp-PID`) are removed. A folder this call created and that stays empty
    is removed again, so a run that fails before writing anything leaves no trace."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the run folder {run_dir} ({e.strerror})") from None
    try:
        with folder_lock(run_dir, "training run"):
            clean_stale(run_dir)
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if still empty


# ---- the run ------------------------------------------------------------------------------------
class _Session:
    """State of one training run: built from a config (new run) or a checkpoint (resume)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: Progress, pretrained: bool = True,
                 recorded: tuple | None = None):
        """pretrained=False skips loading cfg.weights (a resumed run takes the checkpoint's);
        recorded=(split.json dict, classes, data root) reuses a run's split instead of scanning."""
        import torch

        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.pre = default_preprocess(cfg.arch)
        if cfg.image_size:
            self.pre = self.pre.with_crop(cfg.image_size)
        self.notes: list[str] = []
        if recorded is None:
            progress.message(f"scanning {cfg.data} ...")
            self.scanned = scan(cfg.data, cfg.val_fraction, cfg.seed, check_size=self.pre.check_size)
        else:
            self.scanned, self.notes = from_record(*recorded, check_size=self.pre.check_size)
            for note in self.notes:
                progress.message(f"note: {note}")
        self.model, self.source = build(cfg.arch, len(self.scanned.classes), cfg.weights if pretrained else "none",
                                        image_size=self.pre.crop)
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.dtype = amp_dtype(self.device)
        use_scaler = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.train_loader, self.val_loader, self.generator = make_loaders(self.scanned, self.pre, cfg, self.device)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.criterion = make_criterion(cfg, self.scanned.train, len(self.scanned.classes), self.device)
        self.ema = make_ema(self.model, cfg)  # None unless --ema
        self.stopper = EarlyStopping(cfg.patience)
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
        if ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_acc, self.best_epoch = float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        self.history = [EpochStats(**h) for h in ckpt["history"]]
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.stopper.load_state_dict(ckpt.get("early_stopping", {}))
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
            "recipe": recipe_meta(self.cfg, self.scanned.train, len(self.scanned.classes), self.stopper),
            "versions": versions(("torch", "torchvision")),
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
        set_backbone_frozen(self.model, cfg.arch, frozen)
        set_train_mode(self.model, cfg.arch, frozen)
        phase = "head" if frozen else "full"
        self.generator.manual_seed(cfg.seed * 1000 + epoch)  # same order on resume
        lr = self.optimizer.param_groups[-1]["lr"]  # the head's, at the epoch's first step
        self.progress.start_epoch(epoch + 1, cfg.epochs, self.steps_per_epoch, phase)
        start = time.perf_counter()
        loss, acc, rate = train_epoch(self.model, self.train_loader, self.optimizer, self.scaler,
                                      self.criterion, self.device, self.dtype, self.scheduler, self.progress,
                                      max_steps=self.steps_per_epoch, ema=self.ema)
        self.step += self.steps_per_epoch
        val_loss, val_acc = self.validate(self.eval_model)
        raw_acc = self.validate(self.model)[1] if self.ema is not None else None
        stats = EpochStats(epoch + 1, phase, lr, loss, acc, val_loss, val_acc,
                           rate, time.perf_counter() - start, raw_acc)
        self.progress.end_epoch(stats)
        return stats

    @property
    def eval_model(self):
        """The weights that are validated and saved: the EMA model's when --ema is on."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, model) -> tuple[float, float]:
        import torch

        logits, labels = predict_logits(model, self.val_loader, self.device, self.dtype)
        if labels.numel() == 0:
            raise TlexportError("no validation image could be read")
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return loss, (logits.argmax(1) == labels).float().mean().item()

    def finish_epoch(self, stats: EpochStats) -> None:
        self.history.append(stats)
        self.epoch += 1
        meta = self.weights_meta()
        improved = stats.val_acc > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = stats.val_acc, stats.epoch
            save_weights(self.eval_model, self.run_dir / "best.safetensors", meta)
        save_weights(self.eval_model, self.run_dir / "last.safetensors", meta)
        self.stopper.update(stats.epoch, improved)
        state = {"epoch": self.epoch, "step": self.step, "best_acc": self.best_acc,
                 "best_epoch": self.best_epoch, "history": [asdict(h) for h in self.history],
                 "early_stopping": self.stopper.state_dict()}
        if self.ema is not None:
            state["ema"] = ema_state(self.ema)
        save_checkpoint(self.run_dir / "checkpoint.pt", self.model, self.optimizer, self.scaler, self.scheduler,
                        state)
        write_metrics(self.run_dir, self.history)
        write_json(self.run_dir / "run.json", self.run_meta())

    def loop(self) -> TrainResult:
        while self.epoch < self.cfg.epochs and not self.stopper.stopped:
            self.finish_epoch(self.run_epoch())
        if self.stopper.stopped:
            self.progress.message(f"early stop after epoch {self.stopper.stopped_epoch}: no val accuracy gain "
                                  f"for {self.cfg.patience} epoch(s); best {self.best_acc:.1%} at epoch {self.best_epoch}")
        from ..render import plot_curves

        plot_curves(self.run_dir / "curves.png", self.history)
        return TrainResult(
            run_dir=self.run_dir, classes=self.scanned.classes, best_val_accuracy=self.best_acc,
            best_epoch=self.best_epoch, epochs=self.epoch, weights_file=self.run_dir / "best.safetensors",
            weights_source=self.source.kind, device=str(self.device), history=self.history,
            skipped=len(self.scanned.skipped), notes=self.notes, stopped_epoch=self.stopper.stopped_epoch,
        )


def train(cfg: TrainConfig, progress: Progress | None = None, overwrite: bool = False) -> TrainResult:
    """Fine-tune `cfg.arch` on `cfg.data` and write a run directory.

    Args:
        cfg: all options (see TrainConfig).
        progress: optional callbacks for progress display.
        overwrite: replace a run already in the folder (its files are removed once the new run's
            data and model are ready; other files stay).
    Returns:
        TrainResult with the run directory, best val accuracy and per-epoch history.
    Raises:
        FolderLocked: another process is writing the run folder.
    """
    cfg.validate()
    progress = progress or Progress()
    run_dir = default_run_dir(cfg)
    check_new_run_dir(run_dir, overwrite)
    with _locked_run_dir(run_dir):
        check_new_run_dir(run_dir, overwrite)  # again under the lock: a concurrent run may have won
        session = _Session(cfg, run_dir, progress)  # scans and builds before any run file is written
        if overwrite:
            _remove_run_files(run_dir)
        session.write_start_files()
        return session.loop()


def resume(run_dir: Path | str, epochs: int | None = None, progress: Progress | None = None,
           device: str | None = None, workers: int | None = None) -> TrainResult:
    """Continue a run from its checkpoint.pt with the options stored in run.json, on the split
    recorded in split.json (files added or removed since are reported in `notes`, never mixed in).
    A run stopped before its first checkpoint starts again from scratch with its stored options.

    Args:
        epochs: a new total number of epochs (to extend a finished run); default the stored one.
        device, workers: where and with how many loader processes to continue (default: stored);
            neither changes the run's results.
    """
    run_dir = Path(run_dir).expanduser()
    meta_file = run_dir / "run.json"
    if not meta_file.is_file():
        raise UsageError(f"{run_dir} has no run.json to resume from (not a tlexport run)")
    progress = progress or Progress()
    with folder_lock(run_dir, "training run"):
        clean_stale(run_dir)
        meta = _read_json(meta_file)
        cfg = _stored_config(meta, run_dir, epochs, device, workers)
        ckpt = _load_checkpoint(run_dir / "checkpoint.pt")
        session = _Session(cfg, run_dir, progress, pretrained=ckpt is None, recorded=_recorded_split(run_dir, meta, cfg))
        if ckpt is None:
            progress.message(f"{run_dir} has no checkpoint yet: starting it again from epoch 1")
            session.write_start_files()
            return session.loop()
        session.source.kind, session.source.file = _stored_source(meta)
        session.resume_from(ckpt)
        if session.stopper.stopped:
            raise UsageError(f"{run_dir} stopped early at epoch {session.stopper.stopped_epoch} "
                             f"(--patience {cfg.patience}); there is nothing to resume")
        if session.epoch >= cfg.epochs:
            raise UsageError(f"{run_dir} already finished {session.epoch} epoch(s); pass --epochs N (> {session.epoch}) to train on")
        progress.message(f"resuming {run_dir} at epoch {session.epoch + 1}/{cfg.epochs}")
        # split.json and run.json describe the files this run now trains on, and its device.
        write_json(run_dir / "split.json", session.scanned.split_record())
        write_json(run_dir / "run.json", session.run_meta())
        return session.loop()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TlexportError(f"{path} cannot be read ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise TlexportError(f"{path} is not a JSON object")
    return data


def _stored_config(meta: dict, run_dir: Path, epochs, device, workers) -> TrainConfig:
    options = meta.get("options")
    if not isinstance(options, dict):
        raise TlexportError(f"{run_dir / 'run.json'} has no 'options' to resume with")
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in {f.name for f in fields(TrainConfig)}})
    cfg.out = str(run_dir)
    if epochs is not None:
        cfg.epochs = epochs
    if device is not None:
        cfg.device = device
    if workers is not None:
        cfg.workers = workers
    cfg.validate()
    return cfg


def _load_checkpoint(path: Path) -> dict | None:
    import torch

    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TlexportError(f"{path} cannot be read ({first_line(e)})") from None


def _recorded_split(run_dir: Path, meta: dict, cfg: TrainConfig) -> tuple | None:
    """(split.json, classes, data root) to resume on, or None (no split recorded: scan)."""
    split_file = run_dir / "split.json"
    if not split_file.is_file() or not isinstance(meta.get("classes"), list):
        return None
    record = _read_json(split_file)
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    root = data.get("root") or record.get("root") or cfg.data
    return record, meta["classes"], root


def _stored_source(meta: dict) -> tuple[str, str | None]:
    weights = meta.get("weights", {})
    return weights.get("source", "none"), weights.get("file")
