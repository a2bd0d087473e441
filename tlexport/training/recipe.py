"""The training-recipe options of timm / torchvision's references: an EMA of the weights,
mixup / cutmix, class-imbalance weights and a balanced sampler, and early stopping.

Each piece is built from a TrainConfig and is a no-op (None, or an object that never fires) when
its option is off, so the loop calls them unconditionally. Whatever carries state between epochs
(the EMA weights, the patience counter) has a `state_dict` that goes into checkpoint.pt.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from ..data.dataset import collate_skip_none
from .config import TrainConfig


# ---- EMA of the weights -------------------------------------------------------------------------
def make_ema(model, cfg: TrainConfig):
    """torch's AveragedModel with an exponential average, updated after every optimiser step.
    BatchNorm buffers are averaged too (use_buffers=True), so the EMA model evaluates with
    statistics that match its own weights. Returns None when `--ema` is 0."""
    if not cfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def ema_state(ema) -> dict:
    """The EMA's weights, buffers and update count as CPU tensors (for checkpoint.pt)."""
    return {k: v.detach().cpu() for k, v in ema.state_dict().items()}


# ---- mixup / cutmix -----------------------------------------------------------------------------
class MixCollate:
    """Collate function that mixes whole batches like timm's Mixup: with probability `prob` a
    batch is mixed, by CutMix with probability `switch_prob` when both are on, else MixUp
    (torchvision transforms.v2). Labels always come out as soft targets (one-hot for an unmixed
    batch) so every batch has the same type; CrossEntropyLoss takes them with its label smoothing
    and class weights. A class (not a closure) so loader worker processes can pickle it."""

    def __init__(self, num_classes: int, mixup: float, cutmix: float, prob: float, switch_prob: float):
        self.num_classes, self.mixup, self.cutmix = num_classes, mixup, cutmix
        self.prob, self.switch_prob = prob, switch_prob

    def __call__(self, batch):
        batch = collate_skip_none(batch)
        if batch is None:
            return None
        import torch
        from torchvision.transforms import v2

        x, y = batch
        # torch's global RNG (saved in checkpoint.pt) draws every choice, like the augmentations
        if float(torch.rand(())) >= self.prob:
            return x, torch.nn.functional.one_hot(y, self.num_classes).float()
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or float(torch.rand(())) < self.switch_prob)
        if use_cutmix:
            mix = v2.CutMix(alpha=self.cutmix, num_classes=self.num_classes)
        else:
            mix = v2.MixUp(alpha=self.mixup, num_classes=self.num_classes)
        return mix(x, y)


def train_collate(cfg: TrainConfig, num_classes: int):
    """The training loader's collate function: MixCollate when --mixup or --cutmix is on."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        return MixCollate(num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob)
    return collate_skip_none


def hard_labels(y):
    """Integer labels of a batch; for soft (mixed) targets the dominant class of each mix, which
    is what train accuracy is measured against."""
    return y.argmax(1) if y.ndim == 2 else y


# ---- class imbalance ----------------------------------------------------------------------------
def class_counts(samples, num_classes: int) -> list[int]:
    counts = Counter(label for _, label in samples)
    return [counts.get(c, 0) for c in range(num_classes)]


def inverse_frequency(counts: list[int]) -> list[float]:
    """n / (classes x count_c), scikit-learn's "balanced" weights: 1.0 for every class of a
    balanced set. A class with no training image gets 0 (there is nothing to weigh)."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]


def make_criterion(cfg: TrainConfig, samples, num_classes: int, device):
    """CrossEntropyLoss with label smoothing and, for `--class-weights auto`, inverse-frequency
    class weights from the training split."""
    import torch

    weight = None
    if cfg.class_weights == "auto":
        weight = torch.tensor(inverse_frequency(class_counts(samples, num_classes)), device=device)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def sampling_weights(dataset, cfg: TrainConfig):
    """None (a shuffled pass over the training images), or with `--balanced-sampler` one weight
    per image that draws every class equally often. The loop's EpochSampler draws with
    replacement from these weights, as many draws as training images, seeded from --seed and the
    epoch (so a resumed run draws the same batches) and split across the ranks of a process group."""
    if not cfg.balanced_sampler:
        return None
    labels = [label for _, label in dataset.samples]
    counts = Counter(labels)
    return [1.0 / counts[label] for label in labels]


# ---- early stopping -----------------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Stop when val accuracy has not improved for `patience` epochs (0: never).

    `bad_epochs` counts epochs since the last improvement; it is saved in checkpoint.pt, so a
    resumed run keeps counting where the interrupted one stopped."""

    patience: int = 0
    bad_epochs: int = 0
    stopped_epoch: int | None = None

    def update(self, epoch: int, improved: bool) -> bool:
        """Record epoch `epoch` (1-based); True when training should stop after it."""
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.patience and self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
        return self.stopped

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.bad_epochs = int(state.get("bad_epochs", 0))
        stopped = state.get("stopped_epoch")
        self.stopped_epoch = int(stopped) if stopped is not None else None


# ---- run.json -----------------------------------------------------------------------------------
def recipe_meta(cfg: TrainConfig, samples, num_classes: int, stopper: EarlyStopping) -> dict:
    """What run.json says about the recipe beyond the raw options: which weights were saved,
    the class weights used, and whether (and when) early stopping ended the run."""
    counts = class_counts(samples, num_classes)
    return {
        "saved_weights": "ema" if cfg.ema else "raw",
        "ema_decay": cfg.ema or None,
        "mix": {"mixup": cfg.mixup, "cutmix": cfg.cutmix, "prob": cfg.mixup_prob,
                "switch_prob": cfg.mixup_switch_prob} if cfg.mixup or cfg.cutmix else None,
        "auto_augment": cfg.auto_augment,
        "class_counts": counts,
        "class_weights": inverse_frequency(counts) if cfg.class_weights == "auto" else None,
        "sampler": "balanced" if cfg.balanced_sampler else "random",
        "early_stopping": {"patience": cfg.patience, "epochs_without_improvement": stopper.bad_epochs,
                           "stopped_epoch": stopper.stopped_epoch} if cfg.patience else None,
    }
