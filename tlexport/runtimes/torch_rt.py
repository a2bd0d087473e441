"""PyTorch runtimes: the torch plumbing the TorchScript and .pt2 runtimes share (their formats'
packages subclass `TorchRuntime`), and torch-eager: the trained weights in a plain torchvision
model, the reference every artifact is compared with. Torch is imported inside methods only.
"""

from __future__ import annotations

import numpy as np

from ..errors import RuntimeUnavailable
from ..formats.spec import REFERENCE_RUNTIME
from .base import Runtime


class TorchRuntime(Runtime):
    """Shared torch plumbing: device checks, threads, dtype casts, CUDA sync. A subclass's
    `_load` calls `_prepare_torch`, loads its model and hands it to `_finish`."""

    def _prepare_torch(self):
        import torch

        # TF32 is left as PyTorch sets it: parity switches it off around its own comparison
        # (`verify.parity.no_tf32`), bench measures what a user's process would run.
        if is_cuda(self.device) and not torch.cuda.is_available():
            raise RuntimeUnavailable("CUDA is not available")
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
        if is_cuda(self.device):
            import torch

            torch.cuda.synchronize()

    @classmethod
    def unavailable_reason(cls, device, precision):
        if is_cuda(device) and not _torch_cuda():
            return "no CUDA GPU visible to torch"
        if precision == "int8":
            return f"{cls.name} has no int8 variant (int8 is ONNX-only)"
        if precision == "fp16" and device == "cpu":
            return f"fp16 {cls.name} runs on CUDA only"
        return None


class TorchEager(TorchRuntime):
    """The trained weights in a plain torchvision model (the reference)."""

    name = REFERENCE_RUNTIME

    def _load(self):
        from ..models import load_run

        self._prepare_torch()
        if self.run_dir is None:
            raise RuntimeUnavailable("torch-eager needs the run directory")
        model = load_run(self.run_dir).load_model("best", device=self.device)
        if self.precision == "fp16":
            model = model.half()
        self._finish(model)


def is_cuda(device) -> bool:
    """"cuda" and "cuda:N" alike (a plain string comparison would miss "cuda:0")."""
    return str(device).split(":")[0] == "cuda"


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
