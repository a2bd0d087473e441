"""OpenVINO on the CPU (optional: `pip install "tlexport[openvino]"`)."""

from __future__ import annotations

import numpy as np

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.base import Runtime, cpu_package_reason


class OpenVINORuntime(Runtime):
    """OpenVINO on the CPU, reading an OpenVINO IR (`model.xml`, its weights in the `.bin` beside
    it) or an ONNX file directly (fp32, fp16 or int8 QDQ). Optional (`pip install
    "tlexport[openvino]"`): on x86 CPUs its int8 kernels are often clearly faster than
    onnxruntime's, which is why parity and bench use it when present. Torch-free."""

    name = "openvino"

    @classmethod
    def unavailable_reason(cls, device, precision):
        return cpu_package_reason(device, "OpenVINO", "openvino")

    def config(self) -> dict:
        """Latency mode (one request, all cores on it), optional thread count, and f32 inference
        for fp32 and int8 files: on CPUs with bf16 OpenVINO would otherwise quietly run fp32 models,
        and the layers an int8 model keeps in float for accuracy, in bf16."""
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.precision in ("fp32", "int8"):
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        return cfg

    def _load(self):
        self.check_available()
        if self.artifact is None or not self.artifact.is_file():
            raise RuntimeUnavailable(f"{self.artifact} does not exist")
        weights = self.artifact.with_suffix(".bin")
        if self.artifact.suffix == ".xml" and not weights.is_file():
            raise RuntimeUnavailable(f"{self.artifact.name}: its weights {weights.name} are missing beside it")
        import openvino as ov

        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(self.artifact)), "CPU", self.config())
        except Exception as e:  # OpenVINO raises plain RuntimeError with long messages
            raise RuntimeUnavailable(f"openvino cannot compile {self.artifact.name}: {first_line(e)}") from None
        self._request = self._compiled.create_infer_request()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        out = self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[self._compiled.output(0)]
        # The request reuses its output buffer on the next call: hand back a copy.
        return np.array(out, dtype=np.float32, copy=True)


RUNTIMES = (OpenVINORuntime,)
