"""The one step/epoch engine that every optimisation in tlexport runs through: full fine-tuning
on images, the head stage on cached features, and the LR range test.

An optimisation step takes a group of `accumulate` micro-batches: each is run forward under
autocast (`dtype` None: plain fp32) and backward with its loss scaled by its share of the group's
images, so the gradient is that of the group's mean loss; under DDP only the last backward of a
group synchronises (the others run inside `no_sync`). Then the optimiser steps (through the fp16
GradScaler when there is one), the LR schedule steps, and the EMA model, if any, averages the
weights. A skipped micro-batch (None: its files became unreadable, or a lone last image that
BatchNorm cannot normalise) is left out; a group with nothing left still steps the schedule, which
counts the epoch's steps, not the batches that survived.

Where the micro-batches come from (an image loader or a feature table, each rank's share of the
seeded order), how the loss is built (class weights, label smoothing, soft mixup targets) and what
is validated afterwards belong to the caller; the engine is the same for all of them.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass

from ..errors import UsageError
from .recipe import hard_labels


def optimizer_steps(batches: int, accumulate: int) -> int:
    """Optimisation steps of an epoch of `batches` micro-batches (the last group may be short)."""
    return -(-batches // max(1, accumulate))


@dataclass
class StepTotals:
    loss_sum: float  # loss x images, summed over the step's micro-batches
    correct: int  # images whose top-1 is the (dominant) label
    images: int


@dataclass
class EpochTotals:
    loss: float  # mean over the epoch's images
    acc: float
    images_per_s: float
    images: int


class Engine:
    """Optimisation steps for one optimiser; see the module docstring.

    Args:
        scheduler: stepped after every optimisation step (None: the caller sets the LR).
        scaler: torch.amp.GradScaler for fp16 autocast, else None.
        ema, ema_source: an AveragedModel and the plain model it averages (under DDP the net
            that trains is a wrapper, and for the head stage only a part of the model).
        accumulate: micro-batches per optimisation step.
    """

    def __init__(self, optimizer, criterion, *, scheduler=None, scaler=None, dtype=None, ema=None,
                 ema_source=None, accumulate: int = 1):
        self.optimizer, self.criterion, self.scheduler, self.scaler = optimizer, criterion, scheduler, scaler
        self.dtype, self.ema, self.ema_source, self.accumulate = dtype, ema, ema_source, max(1, accumulate)

    def step(self, net, group) -> StepTotals | None:
        """One optimisation step of `net` over `group` (micro-batches (x, y) on the device, or None
        for one that was skipped). Returns its totals, None when every micro-batch was skipped."""
        live = [b for b in group if b is not None]
        totals = self._accumulate(net, live) if live else None
        if live:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if live and self.ema is not None:
            self.ema.update_parameters(self.ema_source)
        return totals

    def _accumulate(self, net, live) -> StepTotals:
        images = sum(len(y) for _, y in live)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct = 0.0, 0
        for i, (x, y) in enumerate(live):
            last = i == len(live) - 1
            with contextlib.nullcontext() if last else _no_sync(net):
                loss, logits = self._forward(net, x, y)
                scaled = loss * (len(y) / images)  # the group's mean loss (x1.0 without accumulation)
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == hard_labels(y)).sum().item()
        return StepTotals(loss_sum, correct, images)

    def _forward(self, net, x, y):
        import torch

        try:
            with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = net(x)
                return self.criterion(logits, y), logits
        except ValueError as e:
            if "more than 1 value per channel" not in str(e):
                raise
            raise UsageError("a training batch of one image is too small for this model at this image size "
                             "(BatchNorm needs more than one value per channel); use --batch-size 2 or more") from None

    def epoch(self, net, batches, steps: int, progress) -> EpochTotals:
        """`steps` optimisation steps over the micro-batches `batches` yields (fewer when it runs
        out), reporting each step to `progress`. Labels may be soft (mixup / cutmix): accuracy
        then counts the dominant class of each mix."""
        loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
        source = iter(batches)
        for _ in range(steps):
            group = list(itertools.islice(source, self.accumulate))
            if not group:
                break
            totals = self.step(net, group)
            if totals is None:
                continue
            loss_sum, correct, seen = loss_sum + totals.loss_sum, correct + totals.correct, seen + totals.images
            progress.step(totals.images, loss_sum / seen, correct / seen, seen / max(time.perf_counter() - start, 1e-9))
        rate = seen / max(time.perf_counter() - start, 1e-9)
        return EpochTotals(loss_sum / max(seen, 1), correct / max(seen, 1), rate, seen)


def _no_sync(net):
    """DDP's no_sync (gradients stay local until the group's last backward); a plain module has
    nothing to synchronise."""
    no_sync = getattr(net, "no_sync", None)
    return no_sync() if no_sync is not None else contextlib.nullcontext()
