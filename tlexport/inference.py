"""`tlexport predict`: artifact + images -> top-k labels.

For `.onnx` the whole path (decode, resize, crop, normalise, onnxruntime, softmax, labels) is
torch-free: labels and preprocessing come from the model file's metadata. `.ts` and `.pt2` files
are code-bearing archives; they are loaded only when the user names the file explicitly (an
export folder resolves to its ONNX model only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError, DataError, UsageError
from .tables import artifacts as table

# An export folder resolves to the first of these that exists (never to a code-bearing file).
FOLDER_PREFERENCE = tuple(table.file_name("onnx", p) for p in ("fp32", "int8", "fp16"))


@dataclass
class PredictResult:
    """results: [{"image", "top": [{"label", "index", "prob"}]}]; errors: [{"image", "error"}]."""

    model: Path
    results: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


def resolve_model(model_path: Path | str) -> Path:
    """An artifact file, or the best ONNX model of an export folder.

    Raises:
        UsageError: missing path, unknown file type, or a folder without an ONNX model.
    """
    path = Path(model_path).expanduser()
    if path.is_dir() and not table.is_folder_artifact(path):  # an export folder, not a folder model
        for name in FOLDER_PREFERENCE:
            if os.path.lexists(path / name):
                found = table.inside(path, name)  # a link leading out of the folder is refused
                if found is None:
                    raise ArtifactError(f"{path / name} is a link that leads outside {path}; refused "
                                        "(name the file you mean explicitly)")
                if found.is_file():
                    return found
        raise UsageError(f"{path} holds no ONNX model ({', '.join(FOLDER_PREFERENCE)}); TorchScript and "
                         ".pt2 files run code when loaded, so name such a file explicitly")
    if not path.exists():
        raise UsageError(f"model {path} does not exist")
    table.format_of_suffix(path)  # UsageError for a suffix no format has
    return path


def _open_runtime(path: Path):
    """A loaded runtime plus (classes, Preprocess) read from the file's metadata."""
    from .data.preprocess import Preprocess
    from .runtimes import for_artifact

    from .tables.metadata import require

    runtime = for_artifact(path, device="cpu").load()
    # Validated by the metadata schema as it is read; the class count is checked against the
    # output width on the first batch (Runtime.run).
    meta = require(runtime.metadata or {}, path)
    return runtime, meta["classes"], Preprocess.from_dict(meta["preprocess"], path)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(model_path, images, top_k: int = 5, batch_size: int = 16) -> PredictResult:
    """Classify image files and folders with an exported model.

    Args:
        model_path: `.onnx` / `.ort` / `.xml` / `.tflite` / `.pte` / `.ts` / `.pt2` file, or an
            export folder (its ONNX model).
        images: files and/or folders (searched recursively for image files).
        top_k: labels per image (capped at the number of classes).
        batch_size: images per inference call (a fixed-batch model uses its own size).
    Returns:
        PredictResult; unreadable images are listed in `.errors` by name, the rest classified.
    Raises:
        UsageError: bad model or arguments. DataError: no image files at all.
    """
    from .data.images import BadImage, iter_image_files

    if top_k < 1 or batch_size < 1:
        raise UsageError("--top-k and --batch-size must be at least 1")
    path = resolve_model(model_path)
    runtime, classes, pre = _open_runtime(path)
    result = PredictResult(path)
    files = iter_image_files(images)
    if not files:
        raise DataError("no image files found in " + ", ".join(map(str, images)))
    uint8_input = bool(getattr(runtime, "in_graph_preprocess", False))  # it resizes, crops, normalises
    batch = runtime.fixed_batch or batch_size  # the runtime pads a short last batch itself
    pending: list[tuple[Path, np.ndarray]] = []
    for f in files:
        try:
            img = pre.load(f)  # shapes whose resize would be absurd are refused from the header
            pending.append((f, np.asarray(img) if uint8_input else pre.to_array(img)))
        except (BadImage, OSError) as e:
            result.errors.append({"image": str(f), "error": _reason(e)})
        if len(pending) == batch:
            result.results += _classify(runtime, pending, classes, top_k, uint8_input)
            pending = []
    if pending:
        result.results += _classify(runtime, pending, classes, top_k, uint8_input)
    return result


def _reason(e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError):
        return f"cannot read ({e.strerror or type(e).__name__})"
    return str(e) or type(e).__name__


def _classify(runtime, pending, classes, top_k, uint8_input) -> list[dict]:
    """Run one batch and format the top-k."""
    if uint8_input:  # decoded images of any size, one per call
        logits = runtime.run_raw([a for _, a in pending])
    else:
        logits = runtime.run(np.stack([a for _, a in pending]))
    probs = softmax(logits.astype(np.float64))
    k = min(top_k, len(classes))
    out = []
    for (f, _), p in zip(pending, probs):
        order = np.argsort(-p, kind="stable")[:k]
        out.append({"image": str(f), "top": [{"label": classes[i], "index": int(i), "prob": float(p[i])}
                                             for i in order]})
    return out
