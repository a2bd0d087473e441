"""The .pt2 runtime: a `model.pt2` ExportedProgram (torch.export.load unpickles: trusted files
only, see `FormatSpec.runs_code`)."""

from __future__ import annotations

from ...errors import RuntimeUnavailable, first_line
from ...runtimes.torch_rt import TorchRuntime


class PT2Runtime(TorchRuntime):
    name = "pt2"

    def _load(self):
        torch = self._prepare_torch()
        try:
            module = torch.export.load(str(self.artifact)).module()
        except Exception as e:
            raise RuntimeUnavailable(f"cannot load .pt2 {self.artifact} ({first_line(e)})") from None
        self._finish(module.to(self.device))


RUNTIMES = (PT2Runtime,)
