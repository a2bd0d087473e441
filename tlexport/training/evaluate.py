"""`tlexport eval`: accuracy, per-class precision/recall/F1 and the confusion matrix of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import progress as P
from ..data.folders import check_files, labelled_folder
from ..errors import DataError
from ..models import load_run
from ..run import check_outside, made_dirs
from ..run.layout import EVAL_DIR
from .config import TrainConfig, check_value


@dataclass
class EvalResult:
    run_dir: Path
    data: str
    classes: list[str]
    images: int
    top1: float
    top5: float | None  # None with 5 classes or fewer: a top-5 holds every class
    per_class: list[dict]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    skipped: list[tuple[str, str]] = field(default_factory=list)
    confusion_png: Path | None = None

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "data": self.data, "images": self.images,
            "top1": self.top1, "top5": self.top5, "classes": self.classes,
            "per_class": self.per_class, "confusion": self.confusion,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "confusion_png": str(self.confusion_png) if self.confusion_png else None,
        }


def metrics(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, float, list, np.ndarray]:
    """top-1, top-5 (None unless there are more than 5 classes: with 5 or fewer every image's top
    5 holds its class), per-class (precision, recall, f1, support) and the confusion matrix."""
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    tp = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    per_class = [(float(p), float(r), float(f), int(s)) for p, r, f, s in zip(precision, recall, f1, actual)]
    top1 = float((pred == labels).mean())
    top5_acc = float((top5 == labels[:, None]).any(1).mean()) if n_classes > 5 else None
    return top1, top5_acc, per_class, confusion


@P.reporting
def evaluate(run_dir: Path | str, data: Path | str | None = None, batch_size: int = 32,
             device: str = "auto", which: str = "best", out: Path | str | None = None,
             progress=None) -> EvalResult:
    """Evaluate a run's weights on its val split (default) or on a labelled folder.

    Args:
        data: folder with `<class>/` sub-folders (or train/ and val/); default the run's val split.
        out: folder for confusion.png and eval.json (default RUN_DIR/eval; never inside the data).
        progress: called with a `tlexport.progress.Status` line as it checks and classifies images.
    Returns:
        EvalResult with accuracy, per-class metrics and the confusion matrix.
    Raises:
        UsageError: a bad batch size, or `out` inside the images' folder; RunError: not a run;
        DataError: no image to evaluate.
    """
    import torch
    from torch.utils.data import DataLoader

    from ..data.dataset import ImageDataset, collate_skip_none
    from ..render import plot_confusion, write_json_report
    from .torchutil import predict_logits, resolve_device

    check_value(TrainConfig, "batch_size", batch_size)
    run = load_run(run_dir)
    record = run.folder.read_split()
    out_dir = Path(out).expanduser() if out else run.dir / EVAL_DIR
    for read in ([data] if data else []) + ([record["root"]] if record else []):
        check_outside(out_dir, read, "the eval folder")
    samples = labelled_folder(data, run.classes)[0] if data else run.samples("val")
    if not samples:
        raise DataError(f"no images to evaluate: {run.dir} has no val split on disk; pass --data DIR")
    P.stage(f"eval {run.dir.name}")
    checking = P.hook("files")
    samples, bad = check_files(samples, check_size=run.preprocess.check_size,
                               progress=lambda done, total: checking("checking images", done, total))
    if not samples:
        raise DataError("none of the images could be read")
    dev = resolve_device(device)
    model = run.load_model(which, dev).to(memory_format=torch.channels_last)
    loader = DataLoader(ImageDataset(samples, run.preprocess.eval_transform()), batch_size=batch_size,
                        collate_fn=collate_skip_none)
    batches = P.counted(loader, "classifying", len(samples), "images", size=lambda b: 0 if b is None else len(b[1]))
    logits, labels = predict_logits(model, batches, dev)
    top1, top5, per_class, confusion = metrics(logits.numpy(), labels.numpy(), len(run.classes))
    rows = [
        {"class": c, "precision": p, "recall": r, "f1": f, "support": s}
        for c, (p, r, f, s) in zip(run.classes, per_class)
    ]
    result = EvalResult(run.dir, str(data) if data else "run val split", run.classes, int(labels.numel()),
                        top1, top5, rows, confusion.tolist(), [(str(p), r) for p, r in bad])
    with made_dirs(out_dir):  # a folder it created is not left behind empty if writing fails
        result.confusion_png = plot_confusion(confusion, run.classes, out_dir / "confusion.png")
        write_json_report(out_dir / "eval.json", result.to_dict())  # a report: through a link or device
    return result
