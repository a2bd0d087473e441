"""OpenCV's DNN module as a runtime of `.onnx` files (`cv2.dnn.readNetFromONNX`): what a C++ or
Python app that already links OpenCV runs, with no onnxruntime at all. Optional
(`pip install -e '.[opencv]'`); torch-free.

fp32 and fp16 files load and agree (benchmarks/compat.py). OpenCV does not read the int8 layout
tlexport writes (onnxruntime's QDQ: QuantizeLinear/DequantizeLinear pairs with per-channel int8
weights), so int8 is a skip with that reason rather than a failure.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.base import Runtime

INSTALL = "pip install -e '.[opencv]' (or pip install opencv-python-headless)"
INT8_REASON = ("OpenCV's DNN does not read onnxruntime's QDQ int8 layout (QuantizeLinear/DequantizeLinear "
               "with per-channel int8 weights) that model.int8.onnx uses; run model.onnx there")


class OpenCVRuntime(Runtime):
    """An `.onnx` file in `cv2.dnn` on the CPU."""

    name = "opencv"

    @classmethod
    def unavailable_reason(cls, device, precision):
        if device != "cpu":
            return "tlexport runs OpenCV's DNN on the CPU only"
        if precision == "int8":
            return INT8_REASON
        if importlib.util.find_spec("cv2") is None:
            return f"OpenCV's DNN needs the Python package 'cv2', which is not installed: {INSTALL}"
        return None

    def _load(self):
        self.check_available()
        import cv2

        if self.threads:
            cv2.setNumThreads(int(self.threads))
        try:
            # Its own backend on the CPU are the defaults (OpenCV 5 warns when a target is set).
            self.net = cv2.dnn.readNetFromONNX(str(self.artifact))
        except Exception as e:  # cv2.error carries OpenCV's multi-line assertion text
            raise RuntimeUnavailable(f"OpenCV cannot load {self.artifact.name} ({first_line(e)})") from None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        self.net.setInput(np.ascontiguousarray(batch, dtype=np.float32))
        return np.array(self.net.forward(), dtype=np.float32, copy=True)

    def _release(self):
        if hasattr(self, "net"):
            del self.net
