"""ExecuTorch's Python runtime on the CPU (XNNPACK delegate) for `.pte` programs.

Optional: `pip install --no-deps executorch==1.5.1` plus the `executorch` extra. ExecuTorch's extension
module needs torch's libraries, so loading imports torch; importing this module does not.
"""

from __future__ import annotations

import numpy as np

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.base import Runtime, cpu_package_reason
from ...runtimes.quiet import silenced


class ExecuTorchRuntime(Runtime):
    """A `.pte` program's `forward` method. A program plans memory for a largest batch; bigger
    batches are fed in chunks of that size, so callers see any batch."""

    name = "executorch"

    @classmethod
    def unavailable_reason(cls, device, precision):
        return cpu_package_reason(device, "ExecuTorch (XNNPACK)", "executorch")

    def _load(self):
        self.check_available()
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        from executorch.runtime import Runtime as ETRuntime

        try:
            with silenced():  # its CPU probing prints to stderr on every load
                program = ETRuntime.get().load_program(str(self.artifact))
                self._method = program.load_method("forward")
        except Exception as e:
            raise RuntimeUnavailable(f"executorch cannot load {self.artifact} ({first_line(e)})") from None
        self._program = program
        sizes = _input_sizes(self._method)
        self.max_batch = sizes[0] if sizes else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.load()
        step = self.max_batch or len(batch)
        out = []
        for start in range(0, len(batch), step):
            x = torch.from_numpy(np.ascontiguousarray(batch[start : start + step], dtype=np.float32))
            out.append(self._method.execute([x])[0].float().numpy().copy())
        return np.concatenate(out)

    def _release(self):
        for attr in ("_method", "_program"):
            if hasattr(self, attr):
                delattr(self, attr)


RUNTIMES = (ExecuTorchRuntime,)


def _input_sizes(method) -> list[int]:
    """The planned (upper-bound) sizes of the method's first input."""
    try:
        return list(method.metadata.input_tensor_meta(0).sizes())
    except Exception:  # older bindings: no MethodMeta; run without chunking
        return []
