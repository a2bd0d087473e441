"""TorchScript metadata: the archive's `tlexport.json` extra file (`torch.jit.save(_extra_files=)`)."""

from ..archive import read_extra as read

__all__ = ["read"]
