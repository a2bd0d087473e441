"""The TorchScript runtime: a `model.ts` / `model.fp16.ts` archive in torch.jit. Loading it runs
its code: discovery in an export folder offers it only with --trust-code (`FormatSpec.runs_code`)."""

from __future__ import annotations

import warnings

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.torch_rt import TorchRuntime


class TorchScriptRuntime(TorchRuntime):
    name = "torchscript"

    def _load(self):
        torch = self._prepare_torch()
        try:
            with warnings.catch_warnings():  # the deprecation notice is in our docs, not every run
                warnings.filterwarnings("ignore", category=FutureWarning)
                model = torch.jit.load(str(self.artifact), map_location=self.device)
        except Exception as e:
            raise RuntimeUnavailable(f"cannot load TorchScript {self.artifact} ({first_line(e)})") from None
        self._finish(model.eval())

    @classmethod
    def unavailable_reason(cls, device, precision):
        if precision == "fp16" and device == "cpu":
            return "fp16 TorchScript is traced on CUDA and runs on CUDA only"
        return super().unavailable_reason(device, precision)


RUNTIMES = (TorchScriptRuntime,)
