"""Every option of `tlexport train`, validated before anything is written."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import UsageError, first_line
from ..tables import archs


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
    # ---- recipe options (timm / torchvision references) ----
    ema: float = 0.0  # EMA decay per step (e.g. 0.9998); 0 = off. Saved weights come from the EMA model
    mixup: float = 0.0  # MixUp Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # CutMix Beta(alpha, alpha); 0 = off
    mixup_prob: float = 1.0  # chance a batch is mixed at all (timm's --mixup-prob)
    mixup_switch_prob: float = 0.5  # chance of CutMix rather than MixUp when both are on
    auto_augment: str = "none"  # rand | trivial | none (torchvision transforms.v2)
    patience: int = 0  # early stopping: epochs without val improvement; 0 = off
    class_weights: str = "none"  # auto (inverse frequency) | none
    balanced_sampler: bool = False
    config_file: str | None = None  # the --config file the values came from (provenance only)
    # ---- how it runs: stages, precision, processes ----
    linear_probe: bool = False  # train only the head, every epoch
    cache_views: int = 0  # head stage: augmented views cached per image (0: one eval-preprocessed view)
    feature_cache: str = "auto"  # head stage features: auto | memory | disk | off
    data_cache: str = "disk"  # decoded, shrunk training images: disk | memory | off (tlexport/data/cache.py)
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
            *self._recipe_checks(),
            (0 <= self.cache_views <= 64, "--cache-views must be in [0, 64]"),
            (self.feature_cache in ("auto", "memory", "disk", "off"), f"unknown --feature-cache {self.feature_cache!r}"),
            (self.precision in ("auto", "fp32", "bf16"), f"unknown --precision {self.precision!r}"),
            (self.data_cache in ("disk", "memory", "off"), f"unknown --data-cache {self.data_cache!r}"),
            (self.dist_timeout > 0, "--dist-timeout must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.image_size is not None:
            spec.check_size(self.image_size)

    def _recipe_checks(self) -> list[tuple[bool, str]]:
        return [
            (0 <= self.ema < 1, f"--ema must be a decay in [0, 1) (e.g. 0.9998; 0 = off), got {self.ema}"),
            (self.mixup >= 0, f"--mixup must be >= 0 (0 = off), got {self.mixup}"),
            (self.cutmix >= 0, f"--cutmix must be >= 0 (0 = off), got {self.cutmix}"),
            (0 <= self.mixup_prob <= 1, f"--mixup-prob must be in [0, 1], got {self.mixup_prob}"),
            (0 <= self.mixup_switch_prob <= 1, f"--mixup-switch-prob must be in [0, 1], got {self.mixup_switch_prob}"),
            (self.auto_augment in AUTO_AUGMENT, f"unknown --auto-augment {self.auto_augment!r}; use rand, trivial or none"),
            (self.auto_augment == "none" or self.augment,
             "--auto-augment needs augmentation on (drop --no-augment)"),
            (self.patience >= 0, f"--patience must be >= 0 (0 = off), got {self.patience}"),
            (self.class_weights in ("auto", "none"), f"unknown --class-weights {self.class_weights!r}; use auto or none"),
            (not (self.balanced_sampler and self.class_weights == "auto"),
             "--balanced-sampler and --class-weights auto both correct the imbalance; use one"),
        ]


AUTO_AUGMENT = ("rand", "trivial", "none")


# ---- config files -------------------------------------------------------------------------------
def load_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or JSON (.json) mapping of TrainConfig options.

    Keys are option names with `_` or `-` (`batch_size`, `batch-size`); values are converted to
    the option's type (so YAML's `lr: 1e-3`, which PyYAML reads as a string, is a float).
    Raises UsageError, naming the file and the key, for an unreadable file, an unknown key or a
    value of the wrong type.
    """
    path = Path(path).expanduser()
    raw = _read_mapping(path)
    types = {f.name: f.type for f in fields(TrainConfig)}
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in types or name == "config_file":
            close = difflib.get_close_matches(name, [n for n in types if n != "config_file"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{path}: unknown key {key!r}{hint}")
        values[name] = _coerce(path, key, types[name], value)
    return values


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise UsageError(f"--config {path}: use a .yaml, .yml or .json file")
    except (ValueError, ImportError) as e:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"--config {path}: cannot be parsed ({first_line(e)})") from None
    except Exception as e:  # yaml.YAMLError: multi-line messages with a caret diagram
        if type(e).__module__.startswith("yaml"):
            raise UsageError(f"--config {path}: cannot be parsed ({first_line(e)})") from None
        raise
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def _coerce(path: Path, key, type_text: str, value):
    """Convert a file value to the field's declared type ("int", "float | None", ...)."""
    kinds = [t.strip() for t in str(type_text).split("|")]
    if value is None and "None" in kinds:
        return None
    kind = kinds[0]
    bad = UsageError(f"{path}: {key!r} must be {_TYPE_WORDS.get(kind, kind)}, got {value!r}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, (bool, list, dict)) or value is None:
        raise bad
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise bad
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        raise bad from None
    return str(value)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
