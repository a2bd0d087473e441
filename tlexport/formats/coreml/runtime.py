"""Core ML through coremltools' `MLModel.predict`, on macOS only (Core ML exists nowhere else).
Torch-free.

The model's input is an RGB image with the normalisation inside, while every tlexport runtime is
handed normalised float32 NCHW batches: each image is turned back into its pixels (x * std + mean,
times 255, rounded: exact for the images parity feeds, which come from 8-bit pixels) and predicted
one at a time; the `logits` output is returned. Compute units are CPU only, so parity compares
like with like (the Neural Engine computes in fp16); Core ML has no thread setting.
"""

from __future__ import annotations

import sys

import numpy as np

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.base import Runtime, cpu_package_reason
from . import NOT_HERE


def to_pixels(chw: np.ndarray, mean, std) -> np.ndarray:
    """A normalised float CHW image -> the uint8 HWC RGB pixels it was made from."""
    x = chw.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


class CoreMLRuntime(Runtime):
    """A `.mlpackage` in Core ML (macOS), image by image."""

    name = "coreml"

    @classmethod
    def unavailable_reason(cls, device, precision):
        if sys.platform != "darwin":
            return NOT_HERE
        return cpu_package_reason(device, "Core ML", "coremltools")

    def _load(self):
        self.check_available()
        import coremltools as ct

        try:
            self.model = ct.models.MLModel(str(self.artifact), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as e:  # coremltools raises plain RuntimeError/ValueError when Core ML refuses
            raise RuntimeUnavailable(f"Core ML cannot load {self.artifact} ({first_line(e)})") from None
        spec = self.model.get_spec()
        self._input = spec.description.input[0].name
        pre = (self.metadata or {}).get("preprocess") or {}
        if "mean" not in pre or "std" not in pre:
            raise RuntimeUnavailable(f"{self.artifact} carries no tlexport preprocessing to rebuild its pixels from")
        self._mean, self._std = pre["mean"], pre["std"]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        from PIL import Image

        self.load()
        out = []
        for chw in np.asarray(batch, dtype=np.float32):
            image = Image.fromarray(to_pixels(chw, self._mean, self._std), "RGB")
            out.append(np.asarray(self.model.predict({self._input: image})["logits"], np.float32).reshape(-1))
        return np.stack(out)


RUNTIMES = (CoreMLRuntime,)
