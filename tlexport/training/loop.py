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
from ..data.cache import ImageCache
from ..data.dataset import ImageDataset, collate_skip_none
from ..data.folders import ScanResult, from_record, scan
from ..data.preprocess import Preprocess
from ..envinfo import versions
from ..errors import TlexportError, UsageError, first_line
from ..fileio import clean_stale, folder_lock, write_json
from ..models import build, default_preprocess
from . import distributed as D
from . import features as F
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
    sampling_weights,
)
from .schedule import make_optimizer, make_scheduler
from .torchutil import predict_logits, resolve_precision, set_backbone_frozen, set_train_mode, to_device


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
    def files_checked(self, done: int, total: int) -> None: ...
    def start_epoch(self, epoch: int, epochs: int, steps: int, phase: str) -> None: ...
    def step(self, images: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


# ---- data loaders ---------------------------------------------------------------------------------------
def make_loaders(scanned: ScanResult, pre: Preprocess, cfg: TrainConfig, device):
    """Train loader (augmented, shuffled by a per-epoch seeded sampler) and val loader (eval
    transform), both sharded over the ranks of a process group. Returns (train_loader, val_loader,
    train_sampler); call train_sampler.set_epoch(epoch) before each epoch."""
    from torch.utils.data import DataLoader

    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    common = dict(
        batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    if workers > 0:
        common["prefetch_factor"] = 4
    cache = ImageCache(cfg.data_cache, scanned.digests)
    train_ds = ImageDataset(scanned.train, pre.train_transform(cfg.augment, cfg.crop_scale, cfg.auto_augment), cache)
    val_ds = ImageDataset(scanned.val, pre.eval_transform(), cache)
    sampler = D.EpochSampler(len(train_ds), cfg.seed, weights=sampling_weights(train_ds, cfg))
    train = DataLoader(train_ds, sampler=sampler, drop_last=False,
                       **{**common, "collate_fn": train_collate(cfg, len(scanned.classes))})
    val = DataLoader(val_ds, sampler=D.EpochSampler(len(val_ds), shuffle=False, pad=False), **common)
    return train, val, sampler


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
                max_steps: int | None = None, ema=None, ema_source=None):
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
        if ema is not None:  # averages the plain model (under DDP `model` is its wrapper)
            ema.update_parameters(ema_source if ema_source is not None else model)
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
        self.device = D.setup(cfg.device, cfg.dist_timeout)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.pre = default_preprocess(cfg.arch)
        if cfg.image_size:
            self.pre = self.pre.with_crop(cfg.image_size)
        self.notes: list[str] = []
        if recorded is None:
            progress.message(f"scanning {cfg.data} ...")
            self.scanned = scan(cfg.data, cfg.val_fraction, cfg.seed, check_size=self.pre.check_size,
                                progress=getattr(progress, "files_checked", None))
        else:
            self.scanned, self.notes = from_record(*recorded, check_size=self.pre.check_size,
                                                   progress=getattr(progress, "files_checked", None))
            for note in self.notes:
                progress.message(f"note: {note}")
        self.model, self.source = build(cfg.arch, len(self.scanned.classes), cfg.weights if pretrained else "none",
                                        image_size=self.pre.crop)
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        D.sync_module(self.model)  # every rank starts from rank 0's weights
        self.optimizer = make_optimizer(self.model, cfg)
        # one choice for all ranks (each rank's speed probe may see a different load)
        self.dtype, self.precision_reason = D.broadcast_object(resolve_precision(self.device, cfg.precision))
        # CPU validation stays fp32, so best-epoch accuracy is that of the fp32 model that is exported
        self.val_dtype = self.dtype if self.device.type == "cuda" else None
        self.net, self.net_phase = None, None
        self.head_data, self.prepared, self.feature_stores = None, None, {}
        use_scaler = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.train_loader, self.val_loader, self.sampler = make_loaders(self.scanned, self.pre, cfg, self.device)
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
            "precision_reason": self.precision_reason,
            "world_size": D.world_size(),
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
        frozen = cfg.linear_probe or epoch < cfg.freeze_epochs
        set_backbone_frozen(self.model, cfg.arch, frozen)
        set_train_mode(self.model, cfg.arch, frozen)
        phase = "head" if frozen else "full"
        self.sampler.set_epoch(epoch)  # same order on resume
        D.reseed_rank(cfg.seed, epoch)
        lr = self.optimizer.param_groups[-1]["lr"]  # the head's, at the epoch's first step
        start = time.perf_counter()
        self.head_data = self.cached_features() if frozen else None
        self.progress.start_epoch(epoch + 1, cfg.epochs, self.steps_per_epoch, phase)
        if self.head_data is not None:
            loss, acc, rate = F.head_epoch(self.network("features"), self.head_data, self.sampler, self.optimizer,
                                           self.scheduler, self.criterion, self.progress, cfg.batch_size,
                                           self.steps_per_epoch, cfg.seed, ema=self.ema, ema_source=self.model)
        else:
            loss, acc, rate = train_epoch(self.network(phase), self.train_loader, self.optimizer, self.scaler,
                                          self.criterion, self.device, self.dtype, self.scheduler, self.progress,
                                          max_steps=self.steps_per_epoch, ema=self.ema, ema_source=self.model)
        loss, acc, rate = D.reduce_epoch(loss, acc, rate, self.device)
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
        """Val loss and accuracy of `model`: on the cached features when it is the model whose
        head trains on them, else over this rank's share of the val images, summed over the ranks."""
        import torch

        if self.head_data is not None and model is self.model:
            loss_sum, correct, n = F.head_validate(self.head_data.block, self.head_data)
        else:
            D.sync_module(model, buffers_only=True)  # rank 0's BatchNorm statistics, as saved
            logits, labels = predict_logits(model, self.val_loader, self.device, self.val_dtype)
            local = [0.0, 0.0, 0.0]
            if labels.numel():
                local = [torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item(),
                         (logits.argmax(1) == labels).sum().item(), labels.numel()]
            loss_sum, correct, n = D.all_reduce_sum(local, self.device)
        if n == 0:
            raise TlexportError("no validation image could be read")
        return loss_sum / n, correct / n

    def network(self, phase: str):
        """What the epoch trains: the model (or the head block on features), wrapped in DDP in a
        process group; wrapped again when the phase, and so the trainable set, changes."""
        if phase != self.net_phase:
            module = self.head_data.block if phase == "features" else self.model
            self.net, self.net_phase = D.wrap(module, self.device), phase
        return self.net

    def cached_features(self):
        """The head stage's features (None: the head trains through the frozen model), prepared
        once per session: the frozen backbone does not change between head epochs."""
        if self.prepared is not None:
            return self.prepared or None
        data = F.prepare(self.model, self.cfg.arch, self.scanned, self.pre, self.cfg, self.device, self.val_dtype,
                         self.run_dir, self.feature_stores)
        if data is not None and data.computed:
            self.progress.message(f"cached backbone features of {data.computed} image view(s) "
                                  f"({data.cache}, {data.seconds:.1f} s)")
        elif data is None and self.cfg.feature_cache != "off":
            self.progress.message(f"head epochs run the frozen model: {F.head_block(self.model, self.cfg.arch)[1]}")
        self.prepared = data or False
        return data

    def finish_epoch(self, stats: EpochStats) -> None:
        self.history.append(stats)
        self.epoch += 1
        # val metrics are summed over the ranks, so every rank takes the same decisions here
        is_best = stats.val_acc > self.best_acc
        if is_best:
            self.best_acc, self.best_epoch = stats.val_acc, stats.epoch
        self.stopper.update(stats.epoch, is_best)
        if D.is_main():  # save_on_master: the other ranks never write
            self.save_epoch(is_best)
        D.barrier()  # the checkpoint is complete before any rank trains on

    def save_epoch(self, is_best: bool) -> None:
        meta = self.weights_meta()
        if is_best:
            save_weights(self.eval_model, self.run_dir / "best.safetensors", meta)
        save_weights(self.eval_model, self.run_dir / "last.safetensors", meta)
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

        if D.is_main():
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
    D.setup(cfg.device, cfg.dist_timeout)  # under torchrun: join the other ranks first
    progress = progress or Progress()
    run_dir = D.broadcast_object(default_run_dir(cfg))  # rank 0's (the default name has the time)
    check_new_run_dir(run_dir, overwrite)
    with _main_rank_lock(run_dir):  # rank 0 alone writes, so rank 0 alone holds the folder
        if D.is_main():
            check_new_run_dir(run_dir, overwrite)  # again under the lock: a concurrent run may have won
        session = _Session(cfg, run_dir, progress)  # scans and builds before any run file is written
        D.barrier()  # every rank checked the folder before rank 0 writes into it
        if D.is_main():
            if overwrite:
                _remove_run_files(run_dir)
            session.write_start_files()
        return session.loop()


def _main_rank_lock(run_dir: Path):
    """Rank 0 alone writes, so it alone holds the folder (torchrun's RANK: valid before the
    process group is joined)."""
    return _locked_run_dir(run_dir) if D.env_info().rank == 0 else contextlib.nullcontext()


def resume(run_dir: Path | str, epochs: int | None = None, progress: Progress | None = None,
           device: str | None = None, workers: int | None = None, dist_timeout: float | None = None) -> TrainResult:
    """Continue a run from its checkpoint.pt with the options stored in run.json, on the split
    recorded in split.json (files added or removed since are reported in `notes`, never mixed in).
    A run stopped before its first checkpoint starts again from scratch with its stored options.

    Args:
        epochs: a new total number of epochs (to extend a finished run); default the stored one.
        device, workers, dist_timeout: where, with how many loader processes and how patiently
            (distributed) to continue (default: stored); none of them changes the run's results.
    """
    run_dir = Path(run_dir).expanduser()
    meta_file = run_dir / "run.json"
    if not meta_file.is_file():
        raise UsageError(f"{run_dir} has no run.json to resume from (not a tlexport run)")
    progress = progress or Progress()
    with _main_rank_lock(run_dir):
        meta = _read_json(meta_file)
        cfg = _stored_config(meta, run_dir, epochs, device, workers, dist_timeout)
        _check_world_size(meta, run_dir, cfg)
        ckpt = _load_checkpoint(run_dir / "checkpoint.pt")
        session = _Session(cfg, run_dir, progress, pretrained=ckpt is None, recorded=_recorded_split(run_dir, meta, cfg))
        if ckpt is None:
            progress.message(f"{run_dir} has no checkpoint yet: starting it again from epoch 1")
            if D.is_main():
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
        if D.is_main():
            # split.json and run.json describe the files this run now trains on, and its device.
            write_json(run_dir / "split.json", session.scanned.split_record())
            write_json(run_dir / "run.json", session.run_meta())
        D.barrier()
        return session.loop()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TlexportError(f"{path} cannot be read ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise TlexportError(f"{path} is not a JSON object")
    return data


def _stored_config(meta: dict, run_dir: Path, epochs, device, workers, dist_timeout=None) -> TrainConfig:
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
    if dist_timeout is not None:
        cfg.dist_timeout = dist_timeout
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


def _check_world_size(meta: dict, run_dir: Path, cfg: TrainConfig) -> None:
    """The schedule counts steps per epoch, which depend on the number of processes: a run
    resumes with the world size it was started with."""
    D.setup(cfg.device, cfg.dist_timeout)
    try:
        stored = int(meta.get("world_size", 1))
    except (TypeError, ValueError):
        raise TlexportError(f"{run_dir / 'run.json'}: world_size must be an integer") from None
    if stored != D.world_size():
        how = f"--nproc {stored} (or torchrun with {stored} processes in all)" if stored > 1 else "one process"
        raise UsageError(f"{run_dir} was trained with {stored} process(es), this job has "
                         f"{D.world_size()}; resume it with {how}")


def _stored_source(meta: dict) -> tuple[str, str | None]:
    weights = meta.get("weights", {})
    return weights.get("source", "none"), weights.get("file")
