"""onnxruntime, with its execution providers as data (after Polygraphy's
`SessionFromOnnx(providers=[...])`): one runtime class, parameterised by a `Provider` row. A row
says the name users type, the device, the provider list handed to onnxruntime (the one asked for,
then its fallbacks), its options and what it refuses; a new execution provider is a new row.
OpenCV's DNN (`OpenCVRuntime`) is the other runtime of `.onnx` files defined here. Torch-free:
this is what `tlexport predict` runs."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from ...errors import RuntimeUnavailable, UsageError, first_line
from ...runtimes.base import Runtime

CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class Provider:
    """One onnxruntime execution provider as a runtime (`tlexport parity --runtimes NAME`).

    Args:
        name: the runtime name users type.
        device: the device it runs on.
        provider: onnxruntime's name of the provider.
        fallbacks: providers handed to onnxruntime after it, for the nodes it does not take.
        fp16_option: a provider option switched on for fp16 files (TensorRT's fp16 kernels).
        refuses: (precision, why) pairs it does not run.
        install: what to install when onnxruntime lacks the provider.
    """

    name: str
    device: str
    provider: str
    fallbacks: tuple[str, ...] = ()
    fp16_option: str | None = None
    refuses: tuple[tuple[str, str], ...] = ()
    install: str = "install onnxruntime-gpu"

    def providers(self, precision: str) -> list:
        """The `providers=` list of an InferenceSession for a file of `precision`."""
        first = (self.provider, {self.fp16_option: precision == "fp16"}) if self.fp16_option else self.provider
        return [first, *self.fallbacks]

    def unavailable_reason(self, device: str, precision: str) -> str | None:
        """Why this provider cannot run on `device` at `precision` here (None when it can)."""
        why = dict(self.refuses).get(precision)
        if why:
            return why
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        if self.provider not in ort.get_available_providers():
            return f"onnxruntime has no {self.provider} ({self.install})"
        if device == "cuda" and self.device == "cpu":
            return "the CPU provider does not run on CUDA"
        return None


PROVIDERS = (
    Provider("onnxruntime", "cpu", CPU_EP),
    Provider("onnxruntime-cuda", "cuda", "CUDAExecutionProvider", fallbacks=(CPU_EP,)),
    Provider("onnxruntime-tensorrt", "cuda", "TensorrtExecutionProvider",
             fallbacks=("CUDAExecutionProvider", CPU_EP), fp16_option="trt_fp16_enable",
             refuses=(("int8", "TensorRT int8 from QDQ models is not wired up in tlexport"),)),
)
# ---- OpenCV's DNN ----------------------------------------------------------------------------------
# `cv2.dnn.readNetFromONNX`: what a C++ or Python app that already links OpenCV runs, with no
# onnxruntime at all (optional: `pip install -e '.[opencv]'`). fp32 files load and agree in OpenCV
# 4.10 and newer, the int8 QDQ file in 4.10 to 4.14 (benchmarks/compat.py); OpenCV 5's engine does
# not read that int8 layout, so there int8 is a skip with that reason rather than a failure.
INSTALL = "pip install -e '.[opencv]' (or pip install opencv-python-headless)"
INT8_REASON = ("OpenCV {version}'s DNN does not read onnxruntime's QDQ int8 layout (QuantizeLinear/DequantizeLinear "
               "pairs with per-channel int8 weights) that model.int8.onnx uses; OpenCV 4.10 to 4.14 run it")


def _opencv_version() -> tuple[str, int] | None:
    """(version, major) of the installed OpenCV (None when cv2 is missing), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"):
        try:
            v = version(dist)
            return v, int(v.split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


class OpenCVRuntime(Runtime):
    """An `.onnx` file in `cv2.dnn` on the CPU."""

    name = "opencv"

    @classmethod
    def unavailable_reason(cls, device, precision):
        if device != "cpu":
            return "tlexport runs OpenCV's DNN on the CPU only"
        found = _opencv_version() if importlib.util.find_spec("cv2") is not None else None
        if found is None:
            return f"OpenCV's DNN needs the Python package 'cv2', which is not installed: {INSTALL}"
        if precision == "int8" and found[1] >= 5:  # its new engine asserts (bufidx >= 0 in argTensor)
            return INT8_REASON.format(version=found[0])
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
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.precision == "int8":  # OpenCV 4's int8 layers mix up the images of a batch (measured)
            return np.concatenate([self._forward(x[i : i + 1]) for i in range(len(x))])
        return self._forward(x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        self.net.setInput(x)
        return np.array(self.net.forward(), dtype=np.float32, copy=True)

    def _release(self):
        if hasattr(self, "net"):
            del self.net




class OnnxRuntime(Runtime):
    """An InferenceSession of one ONNX (or .ort) file on one `Provider` row (default: the CPU)."""

    def __init__(self, artifact=None, precision: str = "fp32", device: str = "cpu", *,
                 provider: Provider = PROVIDERS[0], run_dir=None, threads: int | None = None):
        super().__init__(artifact, precision, device, run_dir=run_dir, threads=threads)
        self.provider = provider

    @property
    def name(self) -> str:
        return self.provider.name

    def clone(self, threads):
        return OnnxRuntime(self.artifact, self.precision, self.device, provider=self.provider,
                           run_dir=self.run_dir, threads=threads)

    def unavailable_reason(self, device, precision):  # an instance: its provider row decides
        return self.provider.unavailable_reason(device, precision)

    def _load(self):
        import onnxruntime as ort

        ep = self.provider.provider
        if ep not in ort.get_available_providers():
            raise RuntimeUnavailable(f"onnxruntime has no {ep} in this install")
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        opts.log_severity_level = 3  # keep ORT's warnings off the user's terminal
        try:
            self.session = ort.InferenceSession(str(self.artifact), opts,
                                                providers=self.provider.providers(self.precision))
        except Exception as e:
            raise RuntimeUnavailable(f"onnxruntime cannot load {self.artifact} ({first_line(e)})") from None
        if ep not in self.session.get_providers():
            raise RuntimeUnavailable(f"{ep} could not be initialised (no usable GPU?)")
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict | None:
        # A loaded session already parsed the model: read its metadata map instead of the file.
        if self._metadata is None and self._loaded:
            from .metadata import from_onnx_props

            self._metadata = from_onnx_props(self.session.get_modelmeta().custom_metadata_map, self.artifact)
        return super().metadata

    @property
    def fixed_batch(self) -> int | None:
        """The session's own input shape decides (also for ONNX files from elsewhere)."""
        self.load()
        first = self.input_shape[0]
        return first if isinstance(first, int) and first > 0 else None

    @property
    def in_graph_preprocess(self) -> bool:
        """The model takes one decoded uint8 RGB image [H, W, 3] (model.uint8.onnx)."""
        self.load()
        return self.input_dtype == np.uint8 and len(self.input_shape) == 3

    def run_raw(self, batch: np.ndarray) -> np.ndarray:
        """Feed a batch in the model's own input dtype/layout; float32 logits. An in-graph
        preprocessing model takes one image per call: each [H, W, 3] of the batch is run alone."""
        if self.in_graph_preprocess:
            return self._checked(np.concatenate([self.run_image(img) for img in batch]))
        return self._checked(self._in_fixed_batches(self._session_run, batch))

    def run_image(self, image: np.ndarray) -> np.ndarray:
        """One decoded RGB image (uint8 [H, W, 3], any size) through an in-graph preprocessing
        model: float32 logits [1, K]."""
        return self._session_run(np.ascontiguousarray(image, dtype=np.uint8))

    def _session_run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.uint8:
            raise UsageError(f"{self.artifact} takes decoded uint8 RGB images (the preprocessing is in the graph); "
                             "use run_image")
        return self._session_run(np.ascontiguousarray(batch, dtype=np.float32))


@dataclass(frozen=True)
class ProviderRuntime:
    """The runtime registry's entry for one `Provider` row (a `runtimes.base.RuntimeFactory`):
    the row stays data, this binds it to `OnnxRuntime`, the one class that runs every provider."""

    provider: Provider
    timed_at_export = True  # as `Runtime.timed_at_export` (a class attribute, not a field)

    @property
    def name(self) -> str:
        return self.provider.name

    def unavailable_reason(self, device: str, precision: str) -> str | None:
        return self.provider.unavailable_reason(device, precision)

    def __call__(self, artifact=None, precision: str = "fp32", device: str | None = None, *,
                 run_dir=None, threads: int | None = None) -> OnnxRuntime:
        """An unloaded runtime of this provider (on its own device unless told another)."""
        return OnnxRuntime(artifact, precision, device or self.provider.device, provider=self.provider,
                           run_dir=run_dir, threads=threads)


# The runtime registry lists each under its name: the providers' rows, then OpenCV's DNN.
RUNTIMES = (*(ProviderRuntime(p) for p in PROVIDERS), OpenCVRuntime)
