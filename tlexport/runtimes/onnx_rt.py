"""onnxruntime with its execution providers (CPU, CUDA, TensorRT): one class per provider, each a
few lines. Torch-free: this is what `tlexport predict` runs."""

from __future__ import annotations

import numpy as np

from ..errors import RuntimeUnavailable, UsageError, first_line
from .base import Runtime


class OnnxRuntime(Runtime):
    """onnxruntime with the CPU execution provider."""

    name = "onnxruntime"
    provider = "CPUExecutionProvider"

    def _providers(self) -> list:
        return [self.provider]

    def _load(self):
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise RuntimeUnavailable(f"onnxruntime has no {self.provider} in this install")
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        opts.log_severity_level = 3  # keep ORT's warnings off the user's terminal
        try:
            self.session = ort.InferenceSession(str(self.artifact), opts, providers=self._providers())
        except Exception as e:
            raise RuntimeUnavailable(f"onnxruntime cannot load {self.artifact} ({first_line(e)})") from None
        if self.provider not in self.session.get_providers():
            raise RuntimeUnavailable(f"{self.provider} could not be initialised (no usable GPU?)")
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict | None:
        # A loaded session already parsed the model: read its metadata map instead of the file.
        if self._metadata is None and self._loaded:
            from ..tables.metadata import from_onnx_props

            self._metadata = from_onnx_props(self.session.get_modelmeta().custom_metadata_map, self.artifact)
        return super().metadata

    @property
    def fixed_batch(self) -> int | None:
        """The session's own input shape decides (also for ONNX files from elsewhere)."""
        self.load()
        first = self.input_shape[0]
        return first if isinstance(first, int) and first > 0 else None

    def run_raw(self, batch: np.ndarray) -> np.ndarray:
        """Feed a batch in the model's own input dtype/layout (e.g. uint8 NHWC); float32 logits."""
        return self._checked(self._in_fixed_batches(self._session_run, batch))

    def _session_run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.uint8:
            raise UsageError(f"{self.artifact} takes uint8 NHWC images (baked preprocessing); use run_raw")
        return self._session_run(np.ascontiguousarray(batch, dtype=np.float32))

    @classmethod
    def unavailable_reason(cls, device, precision):
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        if cls.provider not in ort.get_available_providers():
            return f"onnxruntime has no {cls.provider} (install onnxruntime-gpu)"
        if device == "cuda" and cls.provider == "CPUExecutionProvider":
            return "the CPU provider does not run on CUDA"
        return None


class OnnxRuntimeCUDA(OnnxRuntime):
    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"

    def _providers(self):
        return [self.provider, "CPUExecutionProvider"]


class OnnxRuntimeTensorRT(OnnxRuntime):
    name = "onnxruntime-tensorrt"
    provider = "TensorrtExecutionProvider"

    def _providers(self):
        fp16 = self.precision == "fp16"
        return [(self.provider, {"trt_fp16_enable": fp16}), "CUDAExecutionProvider", "CPUExecutionProvider"]

    @classmethod
    def unavailable_reason(cls, device, precision):
        if precision == "int8":
            return "TensorRT int8 from QDQ models is not wired up in tlexport"
        return super().unavailable_reason(device, precision)
