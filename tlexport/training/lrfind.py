"""LR range test (Leslie Smith; fastai's lr_find): train a few hundred steps at most while the
learning rate grows exponentially, watch the smoothed loss, stop once it diverges, and suggest
an LR. The model and optimiser are put back as they were afterwards; nothing is written."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from ..errors import TlexportError, UsageError
from .config import Range, TrainConfig, check_fields, option

MAX_STEPS = 300
RULES = ("min10", "steepest")
RULE_TEXT = {
    "min10": "the LR of the lowest smoothed loss / 10",
    "steepest": "the LR where the smoothed loss falls fastest (steepest descent per log-LR)",
}


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # raw loss per step
    smoothed: list[float]  # bias-corrected exponential moving average (beta 0.98 by default)
    suggested_lr: float
    rule: str  # which rule chose suggested_lr: min10 | steepest
    min10_lr: float
    steepest_lr: float
    min_loss_lr: float
    start_lr: float
    end_lr: float
    diverged: bool  # stopped early because the smoothed loss blew up
    steps: int
    warning: str | None = None  # why the suggestion may not be trusted
    extra: dict = field(default_factory=dict)  # arch, data, ... (filled by find_lr)

    @property
    def rule_text(self) -> str:
        return RULE_TEXT[self.rule]

    def to_dict(self) -> dict:
        return {
            "suggested_lr": self.suggested_lr, "rule": self.rule, "rule_text": self.rule_text,
            "min10_lr": self.min10_lr, "steepest_lr": self.steepest_lr, "min_loss_lr": self.min_loss_lr,
            "start_lr": self.start_lr, "end_lr": self.end_lr, "diverged": self.diverged, "steps": self.steps,
            "warning": self.warning,
            **self.extra, "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed,
        }


@dataclass
class Sweep:
    """The range test's own options (lr-find's --start-lr, --end-lr, --steps, --rule)."""

    start_lr: float = option(1e-7, "The sweep's first LR.", range=Range(0, lo_open=True))
    end_lr: float = option(10.0, "The sweep's last LR.", range=Range(0, lo_open=True))
    steps: int = option(100, f"Sweep length (at most {MAX_STEPS}; stops on divergence).", range=Range(5, MAX_STEPS))
    rule: str = option("min10", "min10: lowest-loss LR / 10; steepest: fastest-falling loss. Both are reported.",
                       choices=RULES)


def check_sweep(start_lr: float, end_lr: float, steps: int, rule: str) -> None:
    check_fields(Sweep(start_lr, end_lr, steps, rule))
    if end_lr <= start_lr:
        raise UsageError(f"--end-lr ({end_lr}) must be larger than --start-lr ({start_lr})")


def lr_sweep(step_fn, optimizer, start_lr: float, end_lr: float, steps: int,
             beta: float = 0.98, diverge: float = 4.0) -> tuple[list[float], list[float], list[float], bool]:
    """Run `step_fn()` (one optimisation step returning the loss as a float) at exponentially
    growing LRs from start_lr to end_lr. Each param group keeps its ratio to the last (head)
    group's LR, so a body at lr x backbone_lr_mult stays so. Stops when the loss is not finite or
    the smoothed loss exceeds `diverge` x its minimum.

    Returns:
        (lrs, losses, smoothed, diverged) for the steps taken.
    """
    ratios = [g["lr"] / optimizer.param_groups[-1]["lr"] for g in optimizer.param_groups]
    factor = (end_lr / start_lr) ** (1.0 / max(steps - 1, 1))
    lrs, losses, smoothed, avg, best = [], [], [], 0.0, math.inf
    for i in range(steps):
        lr = start_lr * factor**i
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        loss = step_fn()
        if not math.isfinite(loss):
            return lrs, losses, smoothed, True
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (i + 1))  # bias correction: the average starts at 0
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if i > 0 and value > diverge * best:
            return lrs, losses, smoothed, True
    return lrs, losses, smoothed, False


def suggest(lrs: list[float], smoothed: list[float], skip_end: int = 3) -> dict:
    """Both rules on the smoothed curve, ignoring the last `skip_end` points (the divergence
    itself). min10: LR at the lowest loss / 10. steepest: LR at the most negative slope of loss
    against log10(LR) (central differences)."""
    n = max(len(lrs) - skip_end, 2) if len(lrs) > 2 else len(lrs)
    lrs, smoothed = lrs[:n], smoothed[:n]
    i_min = min(range(n), key=smoothed.__getitem__)
    logs = [math.log10(v) for v in lrs]
    if n >= 3:
        slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, n - 1)]
        i_steep = 1 + min(range(len(slopes)), key=slopes.__getitem__)
    else:
        i_steep = i_min
    return {"min_loss_lr": lrs[i_min], "min10_lr": lrs[i_min] / 10, "steepest_lr": lrs[i_steep]}


def run_lr_find(model, optimizer, step_fn, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
                rule: str = "min10") -> LrFindResult:
    """The range test on a built model and optimiser: their state (weights, BatchNorm buffers,
    momentum, LRs) is restored afterwards, whatever happens in between."""
    check_sweep(start_lr, end_lr, steps, rule)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        lrs, losses, smoothed, diverged = lr_sweep(step_fn, optimizer, start_lr, end_lr, steps)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
    if len(lrs) < 2:
        raise TlexportError(f"the loss diverged within {len(lrs) + 1} step(s) of the sweep; "
                            f"lower --start-lr (now {start_lr:g})")
    picks = suggest(lrs, smoothed)
    warning = None
    if picks["min_loss_lr"] == lrs[0]:
        warning = ("the smoothed loss was lowest at the first LR (it never fell): "
                   "lower --start-lr or raise --steps before trusting the suggestion")
    return LrFindResult(lrs, losses, smoothed, picks[f"{rule}_lr"], rule, picks["min10_lr"], picks["steepest_lr"],
                        picks["min_loss_lr"], start_lr, end_lr, diverged, len(lrs), warning)


def find_lr(cfg: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            rule: str = "min10", progress=None) -> LrFindResult:
    """LR range test for the recipe in `cfg` (same data split, augmentation, mixing, loss and
    optimiser as `train`, the whole network trainable). Writes nothing.

    Args:
        cfg: training options; cfg.lr only sets the start ratio between param groups.
        start_lr, end_lr: the sweep's range; steps: its length (at most 300).
        rule: which suggestion becomes `suggested_lr` (min10 or steepest; both are reported).
    """
    from .engine import Engine
    from .history import Progress
    from .session import Session
    from .torchutil import set_train_mode, to_device

    cfg.validate()
    check_sweep(start_lr, end_lr, steps, rule)
    session = Session(cfg, None, progress or Progress())
    trainable = session.trainable
    model, optimizer = trainable.model, trainable.optimizer
    set_train_mode(model, cfg.arch, frozen=False)
    batches = _endless(session.inputs.train_loader, session.inputs.sampler)
    # the sweep sets the LR itself: no schedule, no EMA; --accumulate micro-batches per step as in train
    engine = Engine(optimizer, trainable.criterion, scaler=trainable.scaler, dtype=trainable.dtype,
                    accumulate=cfg.accumulate)

    def step() -> float:
        totals = engine.step(model, [to_device(next(batches), session.device) for _ in range(cfg.accumulate)])
        return totals.loss_sum / totals.images

    result = run_lr_find(model, optimizer, step, start_lr, end_lr, steps, rule)
    result.extra = {"arch": cfg.arch, "data": cfg.data, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
                    "device": str(session.device)}
    return result


def _endless(loader, sampler):
    """Batches forever, reshuffled (seeded) on each pass; batches that lost every file are skipped."""
    for epoch in range(10**9):
        sampler.set_epoch(epoch)
        yielded = False
        for batch in loader:
            if batch is not None:
                yielded = True
                yield batch
        if not yielded:
            raise TlexportError("no training image could be read")
