"""`.pt2` metadata: the archive's `tlexport.json` extra file (`torch.export.save(extra_files=)`)."""

from ..archive import read_extra as read

__all__ = ["read"]
