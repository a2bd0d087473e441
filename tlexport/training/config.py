"""Every option of `tlexport train`, defined once: a TrainConfig field carries its default, its
help, its choices or range, and whether a resumed run may change it. Validation, the Click
options of `train`, `lr-find` and `eval`, and the options table in docs/train.md are all derived
from these fields, so a new recipe option is one field plus the code that uses it."""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ..errors import UsageError
from ..tables import archs

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
AUTO_AUGMENT = ("rand", "trivial", "none")
CLASS_WEIGHTS = ("auto", "none")
CACHE_MODES = ("auto", "memory", "disk", "off")
DATA_CACHE_MODES = ("disk", "memory", "off")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Range:
    """The values a number may take: lo/hi bounds (None: unbounded), each closed or open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):  # NaN compares false to every bound
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return self.hi is None or not (value > self.hi or (self.hi_open and value == self.hi))

    def words(self) -> str:
        """'at least 1', '>= 0', 'positive', 'in [0, 1)', ..."""
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        if self.lo == 0:
            return "positive" if self.lo_open else ">= 0"
        return f"> {lo}" if self.lo_open else f"at least {lo}"


def _number(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}" if v is not None else ""


# What `option()` may say of a field, and what it says when silent.
OPTION_META = {"choices": (), "range": None, "what": "", "note": "", "flag": None, "kind": None, "resumable": False}


def option(default=MISSING, help: str = "", **meta):
    """A TrainConfig field with what the CLI and the docs need to know about it (`meta`: any of
    OPTION_META's keys; another is a TypeError).

    Args:
        choices: the values it takes.
        range: the `Range` a number must lie in.
        what, note: words around the range in the error ("--ema must be a decay in [0, 1)
            (e.g. 0.9998; 0 = off), got 1.5").
        flag: the option's name when it is not --field-name (config_file: --config).
        kind: "path" or "arch": the Click type the CLI uses for the value.
        resumable: `train --resume` may change it (it changes where or how fast the run goes,
            never what it computes).
    """
    unknown = sorted(set(meta) - set(OPTION_META))
    if unknown:
        raise TypeError(f"option() got an unexpected keyword argument {unknown[0]!r}")
    meta = {"help": help, **OPTION_META, **meta}
    meta["choices"] = tuple(meta["choices"])
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def range_error(f, value) -> str:
    m = f.metadata
    words = " ".join(w for w in (m["what"], m["range"].words()) if w)
    note = f" ({m['note']})" if m["note"] else ""
    return f"{flag_of(f)} must be {words}{note}, got {value}"


def choice_error(f, value) -> str:
    choices = f.metadata["choices"]
    return f"unknown {flag_of(f)} {value!r}; use {', '.join(choices[:-1])} or {choices[-1]}"


def check_fields(obj) -> None:
    """Raise UsageError for the first field of a config dataclass outside its range or choices."""
    for f in fields(obj):
        check_field(f, getattr(obj, f.name))


def check_value(cls, name: str, value) -> None:
    """One field's check for a value outside a config object (eval's --batch-size, resume's --epochs)."""
    check_field(next(f for f in fields(cls) if f.name == name), value)


def check_field(f, value) -> None:
    m = f.metadata
    if isinstance(value, float) and not math.isfinite(value):  # every float field, ranged or not
        raise UsageError(f"{flag_of(f)} must be a finite number, got {value}")
    if value is None or not m:
        return
    if m.get("range") is not None and value not in m["range"]:
        raise UsageError(range_error(f, value))
    if m.get("choices") and value not in m["choices"]:
        raise UsageError(choice_error(f, value))


AT_LEAST_1, NON_NEGATIVE, POSITIVE = Range(1), Range(0), Range(0, lo_open=True)
FRACTION = Range(0, 1)


@dataclass
class TrainConfig:
    """Every option of `tlexport train`; stored in run.json so `--resume` can rebuild the run."""

    data: str = option(help="Image folder: `<class>/*`, or `train/<class>/*` + `val/<class>/*`.", kind="path")
    arch: str = option("resnet50", "Any torchvision classifier (`tlexport archs` lists them): resnet18..152, "
                       "mobilenet_v3_small, efficientnet_b0, regnet_x_400mf, convnext_tiny, vit_b_16, swin_t, ...",
                       kind="arch")
    weights: str = option("imagenet", "imagenet (torchvision's, via its cache), none (from scratch), or a "
                          ".safetensors/.pt/.pth path.")
    epochs: int = option(10, "Epochs to train (with --resume: a new total, to extend a finished run).",
                         range=AT_LEAST_1, resumable=True)
    batch_size: int = option(32, "Images per batch and process (an optimisation step takes --accumulate batches).",
                             range=AT_LEAST_1)
    accumulate: int = option(1, "Gradient accumulation: micro-batches of --batch-size per optimisation step "
                             "(the effective batch is N x --batch-size per process); the LR schedule counts "
                             "optimisation steps.", range=AT_LEAST_1)
    optimizer: str = option("sgd", "Optimiser.", choices=OPTIMIZERS)
    lr: float = option(1e-3, "Learning rate of the head (and of the body, see --backbone-lr-mult).", range=POSITIVE)
    momentum: float = option(0.9, "SGD momentum.", range=Range(0, 1))
    weight_decay: float = option(1e-4, "Weight decay.", range=NON_NEGATIVE)
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss.", range=Range(0, 1, hi_open=True))
    scheduler: str = option("cosine", "LR schedule after the warm-up: cosine decay to 0, or x0.1 steps.",
                            choices=SCHEDULERS)
    warmup_epochs: float = option(0.0, "Linear LR warm-up length.", range=NON_NEGATIVE)
    step_size: int = option(0, "Epochs per LR step for --scheduler step (0: a third of the run).", range=NON_NEGATIVE)
    freeze_epochs: int = option(0, "Train only the new head for N epochs first.", range=NON_NEGATIVE)
    backbone_lr_mult: float = option(0.1, "Backbone LR = lr x this, once unfrozen.", range=NON_NEGATIVE)
    augment: bool = option(True, "RandomResizedCrop + horizontal flip.")
    crop_scale: float = option(0.08, "Smallest image area fraction a random crop keeps (raise it when objects "
                               "are small).", range=Range(0, 1, lo_open=True))
    val_fraction: float = option(0.2, "Val share when DATA has no val/ folder.",
                                 range=Range(0, 1, lo_open=True, hi_open=True))
    image_size: int | None = option(None, "Crop size fed to the network (default: the weights' own, e.g. 224).",
                                    range=Range(16))
    seed: int = option(0, "Seed of the split, the initial head, the data order and the augmentation.",
                       range=Range(-(2**31), 2**31 - 1))
    device: str = option("auto", "auto, cpu, cuda or cuda:N.", resumable=True)
    workers: int | None = option(None, "Data loader processes (default: by device and cores).",
                                 range=NON_NEGATIVE, resumable=True)
    max_steps: int | None = option(None, "Cap on optimisation steps per epoch (smoke runs, benchmarks).",
                                   range=AT_LEAST_1)
    out: str | None = option(None, "Run directory (default runs/<arch>-<time>).", kind="path")
    name: str | None = option(None, "Run name under runs/ when --out is not given.")
    # ---- recipe options (timm / torchvision references) ----
    ema: float = option(0.0, "Keep an EMA of the weights with this decay per step (e.g. 0.9998); it is validated "
                        "and saved. 0 = off.", range=Range(0, 1, hi_open=True), what="a decay",
                        note="e.g. 0.9998; 0 = off")
    mixup: float = option(0.0, "MixUp Beta(alpha, alpha) per batch; 0 = off.", range=NON_NEGATIVE, note="0 = off")
    cutmix: float = option(0.0, "CutMix Beta(alpha, alpha) per batch; 0 = off.", range=NON_NEGATIVE, note="0 = off")
    mixup_prob: float = option(1.0, "Chance a batch is mixed at all.", range=FRACTION)
    mixup_switch_prob: float = option(0.5, "Chance of CutMix instead of MixUp when both are on.", range=FRACTION)
    auto_augment: str = option("none", "RandAugment or TrivialAugmentWide after the random crop and flip.",
                               choices=AUTO_AUGMENT)
    patience: int = option(0, "Stop when val accuracy has not improved for N epochs; 0 = off.",
                           range=NON_NEGATIVE, note="0 = off")
    class_weights: str = option("none", "auto: inverse-frequency class weights in the loss (imbalanced data).",
                                choices=CLASS_WEIGHTS)
    balanced_sampler: bool = option(False, "Draw every class equally often (seeded, with replacement).")
    config_file: str | None = option(None, "YAML or JSON file of train options (keys as the flags: batch_size or "
                                     "batch-size); flags given win.", flag="--config", kind="path")
    # ---- how it runs: stages, precision, processes ----
    linear_probe: bool = option(False, "Train only the new head, every epoch (frozen backbone).")
    cache_views: int = option(0, "Head stage: augmented views cached per image (0: one view, eval preprocessing).",
                              range=Range(0, 64))
    feature_cache: str = option("auto", "Head stage (frozen backbone) trains on backbone features computed once per "
                                "image, kept in memory or in RUN/feature-cache (auto: disk above 2 GiB); off runs the "
                                "frozen model every epoch.", choices=CACHE_MODES)
    data_cache: str = option("disk", "Keep each training image decoded and shrunk to what the augmentation "
                             "needs, so only the first epoch decodes: disk (the user cache folder, shared by "
                             "epochs, resumes, runs and ranks; `tlexport cache` shows where and how big), "
                             "memory (this run only) or off.", choices=DATA_CACHE_MODES)
    precision: str = option("auto", "Autocast: auto = AMP on CUDA, bf16 on CPUs with AVX-512 BF16/AMX where a probe "
                            "finds it faster.", choices=PRECISIONS)
    dist_timeout: float = option(900.0, "Distributed: seconds a rank waits for the others before the job fails.",
                                 range=POSITIVE, resumable=True)

    def validate(self) -> None:
        """Raise UsageError for options that cannot work, before anything is written."""
        check_fields(self)
        checks = [
            (self.freeze_epochs < self.epochs or self.freeze_epochs == 0,
             f"--freeze-epochs ({self.freeze_epochs}) must be smaller than --epochs ({self.epochs})"),
            (self.auto_augment == "none" or self.augment, "--auto-augment needs augmentation on (drop --no-augment)"),
            (not (self.balanced_sampler and self.class_weights == "auto"),
             "--balanced-sampler and --class-weights auto both correct the imbalance; use one"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        spec = archs.get(self.arch)
        if self.image_size is not None:
            spec.check_size(self.image_size)


RESUMABLE = tuple(f.name for f in fields(TrainConfig) if f.metadata["resumable"])


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


CONFIG_MAX_BYTES = 1 << 20


def _read_mapping(path: Path) -> dict:
    """The --config file's mapping, read through the bounded readers (size and depth checked
    before the parser can recurse; YAML aliases refused)."""
    from ..fileio import read_json, read_yaml

    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = read_json(path, CONFIG_MAX_BYTES, UsageError)
    elif suffix in (".yaml", ".yml"):
        data = read_yaml(path, CONFIG_MAX_BYTES, UsageError)
    else:
        raise UsageError(f"--config {path}: use a .yaml, .yml or .json file")
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
            number = float(value)
            if not math.isfinite(number):  # YAML's .nan / .inf, JSON's NaN / Infinity
                raise UsageError(f"{path}: {key!r} must be a finite number, got {value!r}")
            return number
    except (TypeError, ValueError):
        raise bad from None
    return str(value)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
