"""What a run folder holds between epochs, from the training side: run.json's content, the
safetensors weights, the resumable checkpoint (plain tensors, loads with weights_only=True) with
the RNG state, and metrics.csv. The files themselves are named, written (atomically) and read by
tlexport.run."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..envinfo import versions
from ..run import RunDir
from ..run.layout import SKIPPED
from . import distributed as D
from .recipe import ema_state, recipe_meta


def run_meta(session) -> dict:
    """run.json: what the run is (arch, classes, preprocessing, weights, data), where and how it
    ran, its metrics so far, every option (what resume rebuilds it from) and the recipe."""
    cfg, inputs, model = session.cfg, session.inputs, session.trainable
    scanned = inputs.scanned
    return {
        "tlexport_version": __version__,
        "arch": cfg.arch,
        "classes": scanned.classes,
        "preprocess": inputs.pre.to_dict(),
        "weights": model.source.to_dict(),
        "data": {
            "root": str(scanned.root.resolve()), "layout": scanned.layout,
            "train_images": len(scanned.train), "val_images": len(scanned.val),
            "skipped": len(scanned.skipped),
        },
        "device": str(session.device),
        "mixed_precision": str(model.dtype).replace("torch.", "") if model.dtype else None,
        "precision_reason": model.precision_reason,
        "world_size": D.world_size(),
        "metrics": session.history.metrics(),
        "options": asdict(cfg),
        "recipe": recipe_meta(cfg, scanned.train, len(scanned.classes), session.history.stopper),
        "versions": versions(("torch", "torchvision")),
    }


def write_start_files(folder: RunDir, session, progress) -> None:
    """split.json, skipped.txt (files left out: unreadable ones, and files of the class folders
    that are not images by their suffix) and run.json, before the first epoch; then the run's
    start summary (`start_summary`) to `progress`."""
    from ..data.folders import other_files

    scanned = session.inputs.scanned
    folder.write_split(scanned.split_record())
    left_out = list(scanned.skipped) + [(f, f"not read: {f.suffix or 'no suffix'} is not an image type tlexport reads")
                                        for f in other_files(scanned)]
    skipped = None
    if left_out:
        skipped = folder.file(SKIPPED)
        dataclasses.replace(scanned, skipped=left_out).write_skipped(skipped)
    folder.write_meta(run_meta(session))
    for line in start_summary(session, left_out, skipped):
        progress.message(line)


SHOWN_NAMES = 5  # classes and skipped files named in the start summary before "... and N more"


def _names(items, n: int = SHOWN_NAMES) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... and {len(items) - n} more" if len(items) > n else "")


def start_summary(session, left_out=(), skipped_file=None) -> list[str]:
    """What is about to train, in a few lines: the architecture and weights, the classes and the
    split, the files left out (by name, and where the full list is), the device, the precision
    chosen and why, and the schedule."""
    cfg, scanned, model = session.cfg, session.inputs.scanned, session.trainable
    lines = [f"{cfg.arch} (weights: {model.source.kind}) · {len(scanned.classes)} classes: {_names(scanned.classes)} · "
             f"{len(scanned.train)} train / {len(scanned.val)} val images from {scanned.root}"]
    if left_out:
        where = f"; list in {skipped_file}" if skipped_file else ""
        lines.append(f"skipped {len(left_out)} file(s) that are not readable images: "
                     f"{_names(Path(p).name for p, _ in left_out)}{where}")
    dtype = str(model.dtype).replace("torch.", "") + " autocast" if model.dtype else "float32"
    epochs = f"{cfg.epochs} epoch" + ("s" if cfg.epochs != 1 else "")
    lines.append(f"device {session.device} · {dtype} ({model.precision_reason}) · {epochs} · "
                 f"batch {cfg.batch_size} · lr {cfg.lr:g}")
    return lines


def save_epoch(folder: RunDir, session, is_best: bool) -> None:
    """Every file of a finished epoch: best (if it is) and last weights, the checkpoint, metrics.csv
    and run.json."""
    model, history = session.trainable, session.history
    meta = {"arch": session.cfg.arch, "classes": session.inputs.classes, "preprocess": session.inputs.pre.to_dict()}
    weights = {k: v.detach().cpu().contiguous() for k, v in model.eval_model.state_dict().items()}
    if is_best:
        folder.write_weights("best", weights, meta)
    folder.write_weights("last", weights, meta)
    state = history.state_dict()
    if model.ema is not None:
        state["ema"] = ema_state(model.ema)
    folder.write_checkpoint(checkpoint_payload(model, state))
    folder.write_metrics([asdict(h) for h in history.epochs])
    folder.write_meta(run_meta(session))


def checkpoint_payload(model, state: dict) -> dict:
    """Everything needed to resume, as tensors and plain types (loads with weights_only=True)."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "model": {k: v.detach().cpu() for k, v in model.model.state_dict().items()},
        "optimizer": model.optimizer.state_dict(),
        "scaler": model.scaler.state_dict() if model.scaler is not None else {},
        "scheduler": model.scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": list(random.getstate()[1]),
            "numpy": torch.from_numpy(np_state[1].astype("int64")),
            "numpy_pos": int(np_state[2]),
        },
        **state,
    }


def restore_rng(rng: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(rng["torch"])
    restore_cuda_rng(rng.get("cuda") or [])
    random.setstate((3, tuple(rng["python"]), None))
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype("uint32"), rng["numpy_pos"], 0, 0.0))


def restore_cuda_rng(states: list) -> int:
    """Restore the per-GPU generators a checkpoint saved, for the GPUs this machine has: a run
    saved on 2 GPUs resumes on 1 (or on the CPU, where nothing is restored) instead of failing
    in set_rng_state_all. Returns how many generators were restored."""
    import torch

    if not states or not torch.cuda.is_available():
        return 0
    n = min(len(states), torch.cuda.device_count())
    for index in range(n):
        torch.cuda.set_rng_state(states[index], device=index)
    return n
