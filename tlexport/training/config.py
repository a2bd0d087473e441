"""Every option of `tlexport train`, validated before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..spec import archs


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
    linear_probe: bool = False  # train only the head, every epoch
    cache_views: int = 0  # head stage: augmented views cached per image (0: one eval-preprocessed view)
    feature_cache: str = "auto"  # head stage features: auto | memory | disk | off
    precision: str = "auto"  # autocast: auto | fp32 | bf16
    dist_timeout: float = 900.0  # seconds a rank waits for the others before the job fails

    def validate(self) -> None:
        """Raise UsageError for options that cannot work, before anything is written."""
        spec = archs.get(self.arch)
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
            (0 <= self.cache_views <= 64, "--cache-views must be in [0, 64]"),
            (self.feature_cache in ("auto", "memory", "disk", "off"), f"unknown --feature-cache {self.feature_cache!r}"),
            (self.precision in ("auto", "fp32", "bf16"), f"unknown --precision {self.precision!r}"),
            (self.dist_timeout > 0, "--dist-timeout must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.image_size is not None:
            spec.check_size(self.image_size)
