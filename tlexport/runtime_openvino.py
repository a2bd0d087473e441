"""OpenVINO runtime for CPU: runs the exported ONNX files (fp32, fp16 or int8 QDQ) directly.

OpenVINO is an optional dependency (`pip install "tlexport[openvino]"`); on x86 CPUs its int8
kernels are often clearly faster than onnxruntime's, which is why bench measures it when present.
It reads the ONNX file itself (no conversion step, no IR files to keep in sync).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import RuntimeUnavailable

from .runtimes import Runtime


def openvino_available() -> tuple[bool, str]:
    """(True, "") when `import openvino` works, else (False, reason for the skipped list)."""
    try:
        import openvino  # noqa: F401
    except Exception as e:  # ImportError, or a broken wheel raising on import
        return False, f"openvino is not installed ({type(e).__name__}); pip install openvino"
    return True, ""


class OpenVinoRuntime(Runtime):
    """Runs an ONNX artifact with OpenVINO on the CPU.

    Args:
        artifact: model.onnx, model.fp16.onnx or model.int8.onnx (float32 NCHW input `image`).
        precision: "fp32" | "fp16" | "int8" (what the file holds; reported, and fp32 keeps
            OpenVINO from lowering precision on CPUs with bf16 support).
        device: only "cpu" (OpenVINO's Intel GPU/NPU plugins are not CUDA devices).
        run_dir: unused (accepted so `discover` can build every runtime the same way).
        threads: INFERENCE_NUM_THREADS (None: OpenVINO's default, all cores).
    """

    name = "openvino"

    def __init__(self, artifact: Path | str, precision: str, device: str = "cpu", *,
                 run_dir: Path | str | None = None, threads: int | None = None):
        super().__init__(artifact, precision, device, run_dir=run_dir, threads=threads)
        self._compiled = None
        self._request = None

    @classmethod
    def unavailable_reason(cls, device: str, precision: str) -> str | None:
        """Why it cannot run here: not installed, or a device other than the CPU."""
        if device != "cpu":
            return "tlexport runs OpenVINO on the CPU only"
        ok, reason = openvino_available()
        return None if ok else reason

    def config(self) -> dict:
        """Compile options: latency mode (one request, all cores on it), optional thread count,
        and f32 inference for fp32 files so results match the other fp32 runtimes."""
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.precision == "fp32":
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        return cfg

    def _load(self) -> None:
        """Compile the ONNX file for the CPU. Raises RuntimeUnavailable when it cannot."""
        reason = self.unavailable_reason(self.device, self.precision)
        if reason:
            raise RuntimeUnavailable(reason)
        if self.artifact is None or not self.artifact.is_file():
            raise RuntimeUnavailable(f"{self.artifact} does not exist")
        import openvino as ov

        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(self.artifact)), "CPU", self.config())
        except Exception as e:  # OpenVINO raises plain RuntimeError with long messages
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RuntimeUnavailable(f"openvino cannot compile {self.artifact.name}: {first}") from None
        self._request = self._compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW -> float32 logits [N, K] (synchronous: synchronize() has nothing to wait for)."""
        self.load()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self._request.infer({0: x})[self._compiled.output(0)]
        # The request reuses its output buffer on the next call: hand back a copy.
        return np.array(out, dtype=np.float32, copy=True)
