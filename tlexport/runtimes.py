"""One interface over every runtime that can run a tlexport model: parity, bench and predict use
it alike. Adding a runtime means adding one small `Runtime` subclass and listing it in
`_CLASSES` (and, for a new artifact format, in `_FORMAT_RUNTIMES`).

Module import is torch-free (predict for ONNX must not import torch); torch is imported inside
the torch runtimes only.

Security: `TorchScriptRuntime` and `PT2Runtime` deserialise code-bearing archives. Only point them
at files you produced or trust.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RuntimeUnavailable, UsageError

RUNTIME_NAMES: tuple[str, ...] = (
    "torch-eager", "torchscript", "pt2", "onnxruntime", "onnxruntime-cuda",
    "onnxruntime-tensorrt", "openvino",
)
PRECISIONS = ("fp32", "fp16", "int8")
# Fixed export file names -> (format, precision). model.uint8.onnx (baked preprocessing, uint8
# NHWC input) is deliberately absent: it is not a parity/bench target.
ARTIFACT_FILES = {
    "model.onnx": ("onnx", "fp32"),
    "model.fp16.onnx": ("onnx", "fp16"),
    "model.int8.onnx": ("onnx", "int8"),
    "model.ts": ("torchscript", "fp32"),
    "model.fp16.ts": ("torchscript", "fp16"),
    "model.pt2": ("pt2", "fp32"),
}


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
            from .export.metadata import read_metadata

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
        """float32 NCHW batch -> float32 logits [N, K], any N (see `_in_fixed_batches`)."""
        return self._in_fixed_batches(self._run, batch)

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


# ---- torch runtimes -------------------------------------------------------------------------------
class _TorchRuntime(Runtime):
    """Shared torch plumbing: device checks, threads, dtype casts, CUDA sync."""

    def _prepare_torch(self):
        import torch

        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeUnavailable("CUDA is not available")
            # Parity compares against an fp32 reference: TF32 would add ~1e-3 errors.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        if self.threads:
            torch.set_num_threads(int(self.threads))
        return torch

    def _finish(self, model):
        import torch

        self.model = model
        self._dtype = torch.float16 if self.precision == "fp16" else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.load()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self._dtype is not None:
            x = x.to(self._dtype)
        with torch.inference_mode():
            y = self.model(x)
        return y.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    @classmethod
    def unavailable_reason(cls, device, precision):
        if device == "cuda" and not _torch_cuda():
            return "no CUDA GPU visible to torch"
        if precision == "int8":
            return f"{cls.name} has no int8 variant (int8 is ONNX-only)"
        if precision == "fp16" and device == "cpu":
            return f"fp16 {cls.name} runs on CUDA only"
        return None


class TorchEager(_TorchRuntime):
    """The trained weights in a plain torchvision model (the reference)."""

    name = "torch-eager"

    def _load(self):
        from .models import load_run

        self._prepare_torch()
        if self.run_dir is None:
            raise RuntimeUnavailable("torch-eager needs the run directory")
        model = load_run(self.run_dir).load_model("best", device=self.device)
        if self.precision == "fp16":
            model = model.half()
        self._finish(model)


class TorchScriptRuntime(_TorchRuntime):
    """A `model.ts` / `model.fp16.ts` archive (loading it runs its code: trusted files only)."""

    name = "torchscript"

    def _load(self):
        torch = self._prepare_torch()
        try:
            with warnings.catch_warnings():  # the deprecation notice is in our docs, not every run
                warnings.filterwarnings("ignore", category=FutureWarning)
                model = torch.jit.load(str(self.artifact), map_location=self.device)
        except Exception as e:
            raise RuntimeUnavailable(f"cannot load TorchScript {self.artifact} ({_short(e)})") from None
        self._finish(model.eval())

    @classmethod
    def unavailable_reason(cls, device, precision):
        if precision == "fp16" and device == "cpu":
            return "fp16 TorchScript is traced on CUDA and runs on CUDA only"
        return super().unavailable_reason(device, precision)


class PT2Runtime(_TorchRuntime):
    """A `model.pt2` ExportedProgram (torch.export.load unpickles: trusted files only)."""

    name = "pt2"

    def _load(self):
        torch = self._prepare_torch()
        try:
            module = torch.export.load(str(self.artifact)).module()
        except Exception as e:
            raise RuntimeUnavailable(f"cannot load .pt2 {self.artifact} ({_short(e)})") from None
        self._finish(module.to(self.device))


# ---- onnx runtimes -------------------------------------------------------------------------------
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
            raise RuntimeUnavailable(f"onnxruntime cannot load {self.artifact} ({_short(e)})") from None
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
            from .export.metadata import from_onnx_props

            self._metadata = from_onnx_props(self.session.get_modelmeta().custom_metadata_map)
        return super().metadata

    @property
    def fixed_batch(self) -> int | None:
        """The session's own input shape decides (also for ONNX files from elsewhere)."""
        self.load()
        first = self.input_shape[0]
        return first if isinstance(first, int) and first > 0 else None

    def run_raw(self, batch: np.ndarray) -> np.ndarray:
        """Feed a batch in the model's own input dtype/layout (e.g. uint8 NHWC); float32 logits."""
        return self._in_fixed_batches(self._session_run, batch)

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


class OpenVINORuntime(Runtime):
    """OpenVINO on the CPU, reading the ONNX file itself (fp32, fp16 or int8 QDQ; no IR files to
    keep in sync). Optional (`pip install "tlexport[openvino]"`): on x86 CPUs its int8 kernels are
    often clearly faster than onnxruntime's, which is why parity and bench use it when present."""

    name = "openvino"

    @classmethod
    def unavailable_reason(cls, device, precision):
        import importlib.util

        if device != "cpu":
            return "tlexport runs OpenVINO on the CPU only"
        if importlib.util.find_spec("openvino") is None:
            return "openvino is not installed (pip install openvino)"
        return None

    def config(self) -> dict:
        """Latency mode (one request, all cores on it), optional thread count, and f32 inference
        for fp32 files: on CPUs with bf16 OpenVINO would otherwise quietly run them in bf16."""
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.precision == "fp32":
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        return cfg

    def _load(self):
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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        out = self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[self._compiled.output(0)]
        # The request reuses its output buffer on the next call: hand back a copy.
        return np.array(out, dtype=np.float32, copy=True)


_CLASSES: dict[str, type[Runtime]] = {
    "torch-eager": TorchEager, "torchscript": TorchScriptRuntime, "pt2": PT2Runtime,
    "onnxruntime": OnnxRuntime, "onnxruntime-cuda": OnnxRuntimeCUDA,
    "onnxruntime-tensorrt": OnnxRuntimeTensorRT, "openvino": OpenVINORuntime,
}
# Which runtimes run which artifact format, and on which devices.
_FORMAT_RUNTIMES = {
    "onnx": [("onnxruntime", "cpu"), ("onnxruntime-cuda", "cuda"), ("onnxruntime-tensorrt", "cuda"),
             ("openvino", "cpu")],
    "torchscript": [("torchscript", "cpu"), ("torchscript", "cuda")],
    "pt2": [("pt2", "cpu"), ("pt2", "cuda")],
}


def runtime_class(name: str) -> type[Runtime]:
    """The class of a runtime name (UsageError for unknown names)."""
    if name not in _CLASSES:
        raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIME_NAMES)}")
    return _CLASSES[name]


def for_artifact(path: Path | str, device: str = "cpu", threads: int | None = None) -> Runtime:
    """The default runtime for one artifact file (.onnx -> onnxruntime, .ts, .pt2), not loaded."""
    path = Path(path)
    fmt, precision = ARTIFACT_FILES.get(path.name, (_format_of(path), "fp32"))
    if path.name.endswith(".fp16.onnx") or path.name.endswith(".fp16.ts"):
        precision = "fp16"
    elif path.name.endswith(".int8.onnx"):
        precision = "int8"
    name = {"onnx": "onnxruntime-cuda" if device == "cuda" else "onnxruntime"}.get(fmt, fmt)
    return runtime_class(name)(path, precision, device, threads=threads)


def _format_of(path: Path) -> str:
    formats = {".onnx": "onnx", ".ts": "torchscript", ".pt2": "pt2"}
    if path.suffix not in formats:
        raise UsageError(f"{path}: unknown model type (expected .onnx, .ts or .pt2)")
    return formats[path.suffix]


def reference_runtime(run_dir: Path | str, device: str = "cpu") -> Runtime:
    """torch-eager fp32 from the run directory's best weights (not loaded)."""
    return TorchEager(None, "fp32", device, run_dir=run_dir)


def list_artifacts(export_dir: Path | str) -> list[tuple[Path, str, str]]:
    """(path, format, precision) of the parity/bench targets in an export folder: from its
    manifest.json when present, else from the fixed file names."""
    export_dir = Path(export_dir)
    manifest = _read_manifest(export_dir)
    out = []
    if manifest is not None:
        for a in manifest.get("artifacts", []):
            path = export_dir / a["file"]
            if a.get("role", "model") == "model" and a["format"] in _FORMAT_RUNTIMES and path.is_file():
                out.append((path, a["format"], a["precision"]))
        return out
    for file, (fmt, precision) in ARTIFACT_FILES.items():
        if (export_dir / file).is_file():
            out.append((export_dir / file, fmt, precision))
    return out


def _read_manifest(export_dir: Path) -> dict | None:
    path = export_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def discover(export_dir: Path | str, *, run_dir: Path | str | None = None, names: list[str] | None = None,
             devices: tuple[str, ...] = ("cpu",), precisions: tuple[str, ...] | None = None,
             threads: int | None = None) -> tuple[list[Runtime], list[Skipped]]:
    """Every (runtime, precision, device) the export folder's artifacts allow.

    Args:
        export_dir: folder written by `tlexport export`.
        run_dir: run directory for torch-eager (default: the manifest's run_dir, else the export
            folder's parent when it holds run.json; torch-eager is skipped when none is found).
        names: runtime names to consider (default: all of RUNTIME_NAMES).
        devices: devices to consider ("cpu", "cuda").
        precisions: precisions to keep (default: all).
        threads: intra-op threads passed to every runtime.
    Returns:
        (not-loaded runtimes, skipped combinations with the reason).
    Raises:
        UsageError: unknown runtime name, device or precision; export_dir missing.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UsageError(f"export folder {export_dir} does not exist")
    names = list(names) if names else list(RUNTIME_NAMES)
    for n in names:
        runtime_class(n)
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise UsageError(f"unknown device {d!r}; choose cpu or cuda")
    for p in precisions or ():
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    wanted = lambda p: precisions is None or p in precisions  # noqa: E731
    found, skipped = [], []

    def consider(name, path, precision, device, run=None):
        reason = _CLASSES[name].unavailable_reason(device, precision)
        if reason:
            skipped.append(Skipped(name, precision, device, reason))
        else:
            found.append(_CLASSES[name](path, precision, device, run_dir=run, threads=threads))

    if "torch-eager" in names:
        run = _find_run_dir(export_dir, run_dir)
        for device in devices:
            for precision in ("fp32", "fp16"):
                if not wanted(precision) or (precision == "fp16" and device == "cpu"):
                    continue
                if run is None:
                    skipped.append(Skipped("torch-eager", precision, device, "run directory not found"))
                else:
                    consider("torch-eager", None, precision, device, run)
    for path, fmt, precision in list_artifacts(export_dir):
        for name, device in _FORMAT_RUNTIMES[fmt]:
            if name in names and device in devices and wanted(precision):
                consider(name, path, precision, device)
    return found, skipped


def _find_run_dir(export_dir: Path, run_dir) -> Path | None:
    if run_dir is not None:
        return Path(run_dir)
    manifest = _read_manifest(export_dir) or {}
    recorded = manifest.get("run", {}).get("dir")
    for cand in ([Path(recorded)] if recorded else []) + [export_dir.parent]:
        if (cand / "run.json").is_file():
            return cand
    return None


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
