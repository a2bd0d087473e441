"""`tlexport predict`: artifact + images -> top-k labels.

For `.onnx` the whole path (decode, resize, crop, normalise, onnxruntime, softmax, labels) is
torch-free: labels and preprocessing come from the model file's metadata. `.ts` and `.pt2` files
are code-bearing archives; they are loaded only when the user names the file explicitly (an
export folder resolves to its ONNX model only).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError, DataError, MissingInput, TlexportError, UsageError, first_line, os_error
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
    """An artifact file, or the model of an export folder: the verified file export timed fastest
    on onnxruntime on its machine (manifest `speed`), else the first ONNX model of FOLDER_PREFERENCE.

    Raises:
        UsageError: missing path, unknown file type, or a folder without an ONNX model.
    """
    from .tables.fastest import fastest_file

    path = Path(model_path).expanduser()
    if path.is_dir() and not table.is_folder_artifact(path):  # an export folder, not a folder model
        fastest = fastest_file(path, "onnxruntime")  # what export timed fastest among the verified files
        if fastest is not None:
            return fastest
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


def check_images(images) -> None:
    """Every IMAGES argument exists and is a file or a folder. A FIFO, a device or a socket named
    explicitly is refused: reading one would block forever or never end.

    Raises:
        MissingInput / BadPath: a path that does not exist or cannot be looked at (exit 2).
        UsageError: a special file (exit 2).
    """
    import stat

    for image in images:
        try:
            mode = os.stat(image).st_mode
        except FileNotFoundError:
            raise MissingInput(f"image {image} does not exist") from None
        except OSError as e:
            raise os_error(e, image, "read", argument=True) from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
            raise UsageError(f"image {image} is {kind}, not an image file; refused (reading it could block "
                             "forever)")


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


def predict(model_path, images, top_k: int = 5, batch_size: int = 16, *, workers: int | None = None,
            progress=None) -> PredictResult:
    """Classify image files and folders with an exported model.

    Files are decoded by a pool of threads (Pillow releases the GIL while it decodes and
    resizes) while the runtime classifies the batch before: a batch is sent as soon as enough
    files are ready, whatever their order, and the results are listed in file order. At most a
    few batches are decoded ahead, so memory stays flat on any number of files.

    Args:
        model_path: `.onnx` / `.ort` / `.xml` / `.tflite` / `.pte` / `.ts` / `.pt2` file, or an
            export folder (its ONNX model).
        images: files and/or folders (searched recursively for image files).
        top_k: labels per image (capped at the number of classes).
        batch_size: images per inference call (a fixed-batch model uses its own size).
        workers: decoding threads (default: the CPUs this process may use, at most 8).
        progress: optional callable(done, total), called as images are classified or refused.
    Returns:
        PredictResult; unreadable images are listed in `.errors` by name, the rest classified.
    Raises:
        UsageError: bad model or arguments. DataError: no image files at all.
    """
    from .data.check import available_cpus
    from .data.images import iter_image_files

    if top_k < 1 or batch_size < 1 or (workers is not None and workers < 1):
        raise UsageError("--top-k, --batch-size and --workers must be at least 1")
    path = resolve_model(model_path)
    check_images(images)
    files = iter_image_files(images)
    if not files:
        raise DataError("no image files found in " + ", ".join(map(str, images)))
    runtime, classes, pre = _open_runtime(path)
    uint8_input = bool(getattr(runtime, "in_graph_preprocess", False))  # it resizes, crops, normalises
    # shapes whose resize would be absurd are refused from the header, as the file is opened
    prepare = (lambda f: np.asarray(pre.load(f))) if uint8_input else (lambda f: pre.to_array(pre.load(f)))
    batch = runtime.fixed_batch or batch_size  # the runtime pads a short last batch itself
    rows: list[dict | None] = [None] * len(files)
    errors: dict[int, dict] = {}
    done = 0
    for ready, failed in _decoded_batches(files, prepare, batch, workers or min(8, available_cpus())):
        for i, e in failed:
            errors[i] = {"image": str(files[i]), "error": _reason(e)}
        if ready:
            for i, row in zip([i for i, _ in ready], _run_batch(path, runtime, ready, files, classes, top_k,
                                                            uint8_input, pre)):
                rows[i] = row
        done += len(ready) + len(failed)
        if progress is not None:
            progress(done, len(files))
    return PredictResult(path, [r for r in rows if r is not None], [errors[i] for i in sorted(errors)])


def _decoded_batches(files: list[Path], prepare, batch: int, workers: int):
    """Yield (ready, failed): up to `batch` (index, array) pairs decoded, and (index, exception)
    of files that could not be, as decodes finish. `2 x batch + workers` files are in flight at
    most, so the pool decodes the next batch while the caller runs this one. The pool's threads
    are daemons that nobody joins: Ctrl-C (or any error) ends the command at once, even while a
    worker is stuck in a read that never returns (a hung network mount)."""
    from .data.images import BadImage

    def job(i):
        try:
            return i, prepare(files[i]), None
        except (BadImage, OSError) as e:
            return i, None, e

    ahead = 2 * batch + workers
    pool = _DaemonPool(job, workers)
    todo, in_flight, ready, failed = iter(range(len(files))), 0, [], []
    try:
        while True:
            while in_flight + len(ready) < ahead and (i := next(todo, None)) is not None:
                pool.submit(i)
                in_flight += 1
            if not in_flight:
                break
            finished = pool.results()
            in_flight -= len(finished)
            for i, arr, err in sorted(finished, key=lambda r: r[0]):
                if err is None:
                    ready.append((i, arr))
                else:
                    failed.append((i, err))
            while len(ready) >= batch or (failed and not ready):
                yield ready[:batch], failed
                ready, failed = ready[batch:], []
        if ready or failed:
            yield ready, failed
    finally:  # an error or Ctrl-C: files not started never start, workers end after their file
        pool.close()


class _DaemonPool:
    """Threads running `job(i)` for submitted indices. Unlike ThreadPoolExecutor (whose workers
    the interpreter joins at exit), its threads are daemons: a worker blocked for good cannot
    keep the process alive after the command ended."""

    def __init__(self, job, workers: int):
        import queue
        import threading

        self.jobs, self.done, self.job = queue.SimpleQueue(), queue.SimpleQueue(), job
        self.threads = [threading.Thread(target=self._work, name="tlexport-decode", daemon=True)
                        for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        while (i := self.jobs.get()) is not None:
            self.done.put(self.job(i))

    def submit(self, i: int) -> None:
        self.jobs.put(i)

    def results(self) -> list:
        """At least one finished job's result, waiting in short slices so a signal (Ctrl-C) is
        handled at once."""
        import queue

        while True:
            try:
                out = [self.done.get(timeout=0.25)]
                break
            except queue.Empty:
                continue
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        import queue

        with contextlib.suppress(queue.Empty):  # drop what has not started
            while True:
                self.jobs.get_nowait()
        for _ in self.threads:
            self.jobs.put(None)


def _reason(e: Exception) -> str:
    from .data.images import file_error

    return file_error(e) if isinstance(e, OSError) else (str(e) or type(e).__name__)


def _run_batch(path, runtime, ready, files, classes, top_k, uint8_input, pre) -> list[dict]:
    """`_classify`, with a runtime's own refusal (onnxruntime's InvalidArgument when the embedded
    crop disagrees with the graph's input size, a shape a runtime cannot take) said in one line
    naming the model file."""
    try:
        return _classify(runtime, ready, files, classes, top_k, uint8_input)
    except TlexportError:
        raise
    except Exception as e:  # noqa: BLE001 - any runtime's error type: the file and its metadata disagree
        raise ArtifactError(f"{path} cannot run on the input its own metadata describes ({pre.crop}x{pre.crop} "
                            f"crop): {first_line(e, 160)}") from None


def _classify(runtime, ready, files, classes, top_k, uint8_input) -> list[dict]:
    """Run one batch of (index, array) and format the top-k."""
    if uint8_input:  # decoded images of any size, one per call
        logits = runtime.run_raw([a for _, a in ready])
    else:
        logits = runtime.run(np.stack([a for _, a in ready]))
    probs = softmax(logits.astype(np.float64))
    k = min(top_k, len(classes))
    out = []
    for (i, _), p in zip(ready, probs):
        order = np.argsort(-p, kind="stable")[:k]
        out.append({"image": str(files[i]), "top": [{"label": classes[j], "index": int(j), "prob": float(p[j])}
                                                    for j in order]})
    return out
