"""The LiteRT (TFLite) interpreter from ai-edge-litert, on the CPU.

Optional: `pip install ai-edge-litert==2.3.0` (the `tflite` extra). Torch-free. The runtime
takes tlexport's float32 NCHW batches whatever the file wants: it resizes the input to the batch,
transposes to NHWC when the file's input is channels-last, and quantizes/dequantizes int8 or uint8
input/output tensors with their own scale and zero point.
"""

from __future__ import annotations

import numpy as np

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.base import Runtime, cpu_package_reason
from ...runtimes.quiet import silenced


class LiteRTRuntime(Runtime):
    """A `.tflite` file in ai_edge_litert's Interpreter."""

    name = "litert"

    @classmethod
    def unavailable_reason(cls, device, precision):
        return cpu_package_reason(device, "LiteRT", "ai_edge_litert")

    def _load(self):
        self.check_available()
        from ai_edge_litert.interpreter import Interpreter

        try:
            with silenced():  # it announces its XNNPACK delegate on stderr
                self.interpreter = Interpreter(model_path=str(self.artifact), num_threads=self.threads or None)
        except Exception as e:
            raise RuntimeUnavailable(f"LiteRT cannot load {self.artifact} ({first_line(e)})") from None
        inp = self.interpreter.get_input_details()[0]
        shape = list(inp["shape"])
        # Channels-last when the last axis holds the 3 colour channels and axis 1 does not.
        self.nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        self._batch = None

    def _resize(self, n: int, shape: tuple) -> None:
        if self._batch == n:
            return
        inp = self.interpreter.get_input_details()[0]
        want = [n, shape[2], shape[3], shape[1]] if self.nhwc else [n, *shape[1:]]
        if list(inp["shape"]) != want:
            self.interpreter.resize_tensor_input(inp["index"], want)
        with silenced():  # the XNNPACK delegate is applied, and announced on stderr, on allocation
            self.interpreter.allocate_tensors()
        self._batch = n

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self._resize(len(x), x.shape)
        if self.nhwc:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        inp = self.interpreter.get_input_details()[0]
        self.interpreter.set_tensor(inp["index"], _quantize(x, inp))
        self.interpreter.invoke()
        out = self.interpreter.get_output_details()[0]
        return _dequantize(self.interpreter.get_tensor(out["index"]), out)

    def _release(self):
        if hasattr(self, "interpreter"):
            del self.interpreter


RUNTIMES = (LiteRTRuntime,)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
