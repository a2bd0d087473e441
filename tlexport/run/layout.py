"""The names of the files in a run folder, and what each one holds (the docs table is made from
this list). Every module that opens a run file takes its name from here."""

from __future__ import annotations

from ..fileio import LOCK_FILE

RUN_JSON = "run.json"
SPLIT_JSON = "split.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.csv"
CURVES = "curves.png"
SKIPPED = "skipped.txt"
FEATURE_CACHE = "feature-cache"  # a folder (the disk feature cache of the head stage)
EVAL_DIR = "eval"  # a folder (`tlexport eval`'s default --out)
EXPORT_DIR = "export"  # a folder (`tlexport export`'s default --out)
LOCK = LOCK_FILE

WEIGHTS = {"best": BEST, "last": LAST}

# (name, what it holds), in the order a run writes them.
FILES = (
    (SPLIT_JSON, "which files were train and which val (paths relative to the data folder), so resume "
                 "and eval use the same split"),
    (SKIPPED, "one `path<TAB>reason` line per file left out: unreadable, or not an image type by its suffix "
              "(only when there were some)"),
    (RUN_JSON, "arch, classes in index order, preprocessing, weights source, data, device, precision, world "
               "size, metrics, every option (what resume rebuilds the run from), recipe, versions"),
    (BEST, "the weights of the epoch with the best val accuracy (safetensors; loads strictly into plain "
           "torchvision)"),
    (LAST, "the weights of the last finished epoch"),
    (CHECKPOINT, "model, optimizer, gradient scaler, LR schedule, epoch, step, EMA weights, early-stopping "
                 "counter and RNG state: plain tensors, loads with `weights_only=True`"),
    (METRICS, "one row per finished epoch (loss, accuracy, LR, images/s)"),
    (CURVES, "loss and accuracy curves"),
    (FEATURE_CACHE + "/", "the head stage's backbone features on disk (`--feature-cache disk`, or auto above 2 GiB)"),
    (LOCK, "present while a process writes the folder (pid and host of the holder)"),
)

# What a run consists of: --overwrite removes these (other files in the folder stay).
RUN_FILES = (RUN_JSON, SPLIT_JSON, CHECKPOINT, BEST, LAST, METRICS, CURVES, SKIPPED)


def bad_class_name(name: str) -> bool:
    """A class name holding a control or line-separating character (Unicode categories Cc, Zl,
    Zp): label files are one name per line, so such a name would shift or split the labels."""
    import unicodedata

    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name)
