"""What a run reports and remembers between epochs: EpochStats per epoch, the History (epochs
and steps done, the best epoch, early stopping), the TrainResult, and the Progress callbacks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .recipe import EarlyStopping


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

    @classmethod
    def from_dict(cls, d: dict) -> "TrainResult":
        """The inverse of to_dict (what a `--nproc` worker hands its launcher)."""
        return cls(run_dir=Path(d["run_dir"]), classes=d["classes"], best_val_accuracy=d["best_val_accuracy"],
                   best_epoch=d["best_epoch"], epochs=d["epochs"], weights_file=Path(d["weights_file"]),
                   weights_source=d["weights_source"], device=d["device"],
                   history=[EpochStats(**h) for h in d["history"]], skipped=d["skipped_files"],
                   notes=d.get("notes", []), stopped_epoch=d.get("stopped_epoch"))


class Progress:
    """Callbacks for long work; the CLI subclasses it with rich bars. Library default: silent."""

    def message(self, text: str) -> None: ...
    def files_checked(self, done: int, total: int) -> None: ...
    def start_epoch(self, epoch: int, epochs: int, steps: int, phase: str) -> None: ...
    def step(self, images: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


class Lines(Progress):
    """Progress as one plain line per event, handed to `say` (print by default): what a library
    caller gets with `train(..., progress=True)` or `progress=print`. Epochs are said when they
    end, with their numbers; the file check every 10 %."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self.say = say or _print_stderr
        self._said = -1

    def message(self, text: str) -> None:
        self.say(text)

    def files_checked(self, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != self._said:
            self._said = tenth
            self.say(f"checked {done}/{total} image files")

    def start_epoch(self, epoch: int, epochs: int, steps: int, phase: str) -> None:
        self.say(f"epoch {epoch}/{epochs} ({phase}, {steps} steps) ...")

    def end_epoch(self, stats: EpochStats) -> None:
        self.say(f"epoch {stats.epoch}: train loss {stats.train_loss:.4f} acc {stats.train_acc:.1%}, val loss "
                 f"{stats.val_loss:.4f} acc {stats.val_acc:.1%}, {stats.images_per_s:.0f} img/s, {stats.seconds:.0f} s")


def _print_stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


CALLBACKS = ("message", "files_checked", "start_epoch", "step", "end_epoch")


class _Partial(Progress):
    """An object with some of Progress's methods (written before a newer one such as
    `files_checked` existed): its own methods are called, the missing ones do nothing."""

    def __init__(self, obj):
        for name in CALLBACKS:
            if hasattr(obj, name):
                setattr(self, name, getattr(obj, name))


def as_progress(progress) -> Progress:
    """The library's `progress=` argument as a Progress: None/False silent, True plain lines on
    stderr, a callable gets one line per event, a Progress (the CLI's rich bars) is used as is."""
    if isinstance(progress, Progress):  # the CLI's bars
        return progress
    if any(hasattr(progress, m) for m in CALLBACKS[1:]):  # an object of the Progress shape
        return _Partial(progress)
    if progress is None or progress is False:
        return Progress()
    if progress is True:
        return Lines()
    if callable(progress):
        return Lines(progress)
    raise TypeError(f"progress must be None, a bool, a callable or a Progress, not {type(progress).__name__}")


def as_callback(progress) -> Callable[[str], None]:
    """The same choices as `as_progress`, for steps said in one line each (export)."""
    return as_progress(progress).message


class History:
    """Epochs and optimisation steps done, every epoch's stats, the best epoch and the early
    stopping counter: what checkpoint.pt keeps besides the tensors."""

    def __init__(self, patience: int):
        self.epoch, self.step, self.best_acc, self.best_epoch = 0, 0, -1.0, 0
        self.epochs: list[EpochStats] = []
        self.stopper = EarlyStopping(patience)

    def record(self, stats: EpochStats, steps: int) -> bool:
        """Add a finished epoch of `steps` optimisation steps; True when it is the best so far.
        Val metrics are summed over the ranks, so every rank takes the same decision here."""
        self.epochs.append(stats)
        self.epoch += 1
        self.step += steps
        is_best = stats.val_acc > self.best_acc
        if is_best:
            self.best_acc, self.best_epoch = stats.val_acc, stats.epoch
        self.stopper.update(stats.epoch, is_best)
        return is_best

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "history": [asdict(h) for h in self.epochs], "early_stopping": self.stopper.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_acc, self.best_epoch = float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        self.epochs = [EpochStats(**h) for h in ckpt["history"]]
        self.stopper.load_state_dict(ckpt.get("early_stopping", {}))

    def metrics(self) -> dict:
        """run.json's "metrics"."""
        return {"best_val_accuracy": max(self.best_acc, 0.0), "best_epoch": self.best_epoch,
                "epochs_done": self.epoch, "last_val_accuracy": self.epochs[-1].val_acc if self.epochs else None}
