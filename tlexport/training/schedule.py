"""Optimiser and learning-rate schedule: two parameter groups (body, head) and torch's own
schedulers (linear warm-up, then cosine or step decay), stepped once per optimisation step."""

from __future__ import annotations

from .config import TrainConfig
from .torchutil import head_parameters


def backbone_lr(cfg: TrainConfig) -> float:
    """Discriminative LR belongs to freeze-then-unfreeze fine-tuning of a pretrained body: after
    `--freeze-epochs`, the body learns at lr x backbone_lr_mult. Without a freeze phase (the
    original recipe) or without pretrained weights, the body learns at the full lr."""
    if cfg.freeze_epochs > 0 and cfg.weights != "none":
        return cfg.lr * cfg.backbone_lr_mult
    return cfg.lr


def make_optimizer(model, cfg: TrainConfig):
    """Two parameter groups: the new head at lr, the body at `backbone_lr(cfg)`. While the body is
    frozen its parameters have no gradients, so the optimiser leaves them alone."""
    import torch

    head = head_parameters(model, cfg.arch)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [
        {"params": body, "lr": backbone_lr(cfg), "name": "backbone"},
        {"params": head, "lr": cfg.lr, "name": "head"},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Linear warm-up over `--warmup-epochs` (from lr/warmup_steps up to lr), then cosine decay to
    zero at the end of the run, or x0.1 every `--step-size` epochs (default a third of the run).

    Returns:
        a torch LRScheduler to step after every optimiser step.
    """
    from torch.optim import lr_scheduler as S

    steps_per_epoch = max(1, steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if cfg.scheduler == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, total - max(warmup, 0)))
    else:
        step_epochs = cfg.step_size or max(1, cfg.epochs // 3)
        main = S.StepLR(optimizer, step_size=step_epochs * steps_per_epoch, gamma=0.1)
    if warmup <= 1:
        return main
    warm = S.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return S.SequentialLR(optimizer, [warm, main], milestones=[warmup])
