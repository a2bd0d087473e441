"""What a run trains on: the preprocessing, the scanned (or recorded) split, the loaders and the
epoch's micro-batches of images for the engine. Reaches tlexport.data only through its public
functions (scan, from_record, ImageDataset, Preprocess)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..data.cache import ImageCache
from ..data.dataset import ImageDataset, collate_skip_none
from ..data.folders import ScanResult, from_record, scan
from ..data.preprocess import Preprocess
from ..models import default_preprocess
from . import distributed as D
from .config import TrainConfig
from .engine import optimizer_steps
from .recipe import sampling_weights, train_collate
from .torchutil import to_device


@dataclass
class RunInputs:
    """The data side of a session."""

    pre: Preprocess
    scanned: ScanResult
    train_loader: object
    val_loader: object
    sampler: D.EpochSampler
    batches: int  # micro-batches per epoch (--max-steps caps the optimisation steps)
    steps: int  # optimisation steps per epoch (batches / --accumulate, rounded up)
    notes: list[str] = field(default_factory=list)  # what resume found changed on disk

    @property
    def classes(self) -> list[str]:
        return self.scanned.classes


def load_inputs(cfg: TrainConfig, device, progress, recorded: tuple | None = None) -> RunInputs:
    """Scan cfg.data (or take the split a run recorded: `recorded` = (split.json dict, classes,
    data root)) and build the loaders."""
    pre = default_preprocess(cfg.arch)
    if cfg.image_size:
        pre = pre.with_crop(cfg.image_size)
    notes: list[str] = []
    if recorded is None:
        progress.message(f"scanning {cfg.data} ...")
        scanned = scan(cfg.data, cfg.val_fraction, cfg.seed, check_size=pre.check_size,
                       progress=getattr(progress, "files_checked", None))
    else:
        scanned, notes = from_record(*recorded, check_size=pre.check_size, progress=getattr(progress, "files_checked", None))
        for note in notes:
            progress.message(f"note: {note}")
    train, val, sampler = make_loaders(scanned, pre, cfg, device)
    batches = len(train) if not cfg.max_steps else min(len(train), cfg.max_steps * cfg.accumulate)
    return RunInputs(pre, scanned, train, val, sampler, batches, optimizer_steps(batches, cfg.accumulate), notes)


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
    cache = ImageCache(cfg.data_cache, scanned.digests)  # decoded, shrunk images: epochs 2+ decode nothing
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


def image_batches(loader, device, batches: int):
    """The epoch's first `batches` micro-batches of `loader` on `device`, None for a batch that
    is skipped: every file of it became unreadable since the scan, or it is a leftover batch of
    one image (BatchNorm in training mode cannot normalise a single value)."""
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        if batch is None or (len(batch[1]) == 1 and (loader.batch_size or 1) > 1):
            yield None
            continue
        yield to_device(batch, device)
