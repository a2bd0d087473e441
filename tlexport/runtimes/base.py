"""The runtime interface: load an artifact once, run float32 NCHW batches to logits many times,
close it explicitly. Fixed-batch graphs are fed in padded chunks here, in one place.

Torch-free to import (predict for ONNX must not import torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


def cpu_package_reason(device: str, what: str, module: str) -> str | None:
    """Why a CPU-only runtime backed by the optional package `module` cannot run here (None when
    it can); the install hint comes from tables.extras."""
    import importlib.util

    from ..tables.extras import not_installed

    if device != "cpu":
        return f"tlexport runs {what} on the CPU only"
    if importlib.util.find_spec(module) is None:
        return not_installed(module, f"the {what} runtime")
    return None


class RuntimeFactory(Protocol):
    """What the runtime registry holds under a runtime's name (each entry of a format package's
    `runtime.RUNTIMES`): a `Runtime` subclass is one, and so is a row of data bound to the class
    that runs it (onnxruntime's execution providers, `formats.onnx.runtime.ProviderRuntime`).

    Attributes:
        name: the runtime name users type (`--runtimes NAME`), one of its spec's `provides`.
        timed_at_export: export times its files against each other (`Runtime.timed_at_export`).
    """

    name: str
    timed_at_export: bool

    def unavailable_reason(self, device: str, precision: str) -> str | None:
        """Why it cannot run on `device` at `precision` here (None when it can)."""
        ...

    def __call__(self, artifact: Path | str | None = None, precision: str = "fp32", device: str = "cpu", *,
                 run_dir: Path | str | None = None, threads: int | None = None) -> "Runtime":
        """An unloaded runtime of one artifact."""
        ...


@dataclass
class Skipped:
    """A runtime × precision × device that cannot run here, and why."""

    name: str
    precision: str
    device: str
    reason: str


class Runtime:
    """Base class: load an artifact (or run dir) once, then map float32 NCHW batches to logits.

    Args:
        artifact: the file it runs (None for torch-eager).
        precision: fp32 | fp16 | int8.
        device: cpu | cuda.
        run_dir: the run directory (torch-eager only).
        threads: intra-op threads (None: the library default).
    """

    name = "base"
    # export times the files of each CPU runtime against each other to name the fastest
    # (`exporters.speed`); a runtime that starts a whole program per load (a browser) is measured
    # by `tlexport bench` on request instead.
    timed_at_export = True

    def __init__(self, artifact: Path | str | None = None, precision: str = "fp32", device: str = "cpu",
                 *, run_dir: Path | str | None = None, threads: int | None = None):
        self.artifact = Path(artifact) if artifact is not None else None
        self.precision = precision
        self.device = device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.threads = threads
        self._metadata: dict | None = None
        self._loaded = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} {self.artifact or self.run_dir}>"

    @property
    def label(self) -> str:
        return f"{self.name}/{self.precision}/{self.device}"

    @property
    def metadata(self) -> dict | None:
        """{"classes", "preprocess", "arch", ...} embedded in the artifact (None for torch-eager)."""
        if self.artifact is None:
            return None
        if self._metadata is None:
            from ..formats.metadata import read_metadata

            self._metadata = read_metadata(self.artifact)
        return self._metadata

    def set_threads(self, n: int | None) -> None:
        """Intra-op threads; call before load()."""
        self.threads = n

    def load(self) -> "Runtime":
        """Do the heavy work (read weights, build sessions); returns self.

        Raises:
            RuntimeUnavailable: the runtime, provider or device is not usable here.
        """
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def _load(self) -> None:
        raise NotImplementedError

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a graph exported with `--batch N` insists on (None: any batch)."""
        batch = (self.metadata or {}).get("batch")
        return batch if isinstance(batch, int) and batch > 0 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> float32 logits [N, K], any N (see `_in_fixed_batches`).

        Raises:
            ArtifactError: the artifact's metadata breaks the schema, or lists a class count
                other than the output width K.
        """
        return self._checked(self._in_fixed_batches(self._run, batch))

    def _checked(self, logits: np.ndarray) -> np.ndarray:
        """Embedded class names must match the output width: the first time the width is known."""
        if self.artifact is not None and np.ndim(logits) == 2:
            from ..tables.metadata import check_output_width

            check_output_width(self.metadata, int(np.shape(logits)[1]), self.artifact)
        return logits

    def _in_fixed_batches(self, call, batch: np.ndarray) -> np.ndarray:
        """`call(batch)`, except that a fixed-batch graph gets the batch in chunks of its size,
        the last one padded by repeating its final image."""
        size = self.fixed_batch
        if size is None or len(batch) == size:
            return call(batch)
        out = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            out.append(call(padded)[: len(chunk)])
        return np.concatenate(out)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One call of the underlying runtime on exactly this batch."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU)."""

    @classmethod
    def unavailable_reason(cls, device: str, precision: str) -> str | None:
        """Why this runtime cannot run on `device` at `precision` here (None when it can)."""
        return None

    def check_available(self) -> None:
        """RuntimeUnavailable with `unavailable_reason`, if there is one."""
        from ..errors import RuntimeUnavailable

        reason = self.unavailable_reason(self.device, self.precision)
        if reason:
            raise RuntimeUnavailable(reason)

    def clone(self, threads: int | None) -> "Runtime":
        """A fresh, unloaded runtime of the same artifact, precision and device (bench runs several
        sessions of one runtime in parallel)."""
        return type(self)(self.artifact, self.precision, self.device, run_dir=self.run_dir, threads=threads)

    def close(self) -> None:
        """Release the session / model now (bench loads one runtime after another)."""
        self._release()
        self._loaded = False

    def _release(self) -> None:
        for attr in ("model", "session", "_compiled", "_request"):
            if hasattr(self, attr):
                delattr(self, attr)

    def __enter__(self) -> "Runtime":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()
