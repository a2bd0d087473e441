"""`.pt2` export: a torch.export ExportedProgram (TorchScript's successor) with metadata inside."""

from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import ExportError, first_line
from ...exporters.job import Artifact
from ...tables.metadata import to_json
from ..archive import EXTRA_FILE


def export_pt2(module, example, path: Path, *, dynamic: bool, meta: dict, size: bool = False) -> list[str]:
    """torch.export.export (free batch, and free height and width with `size`), saved with
    `tlexport.json` in the archive.

    Args:
        module: nn.Module in eval mode.
        example: example input (batch 2 when dynamic: batch 1 would be specialised).
        path: destination (temporary name).
        dynamic: leave the batch dimension free.
        meta: metadata dict.
        size: leave height and width free (`--dynamic-size`).
    Returns:
        notes for the manifest.
    Raises:
        ExportError: torch.export failed.
    """
    import io

    import torch

    from ...exporters.job import dynamic_shapes as dims
    from ...fileio import DiskFull, write_bytes

    dynamic_shapes = dims(dynamic, size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
            # To memory first: torch's file writer aborts the process on a full disk.
            torch.export.save(program, buffer, extra_files={EXTRA_FILE: to_json(meta)})
    except Exception as e:
        raise ExportError(f"torch.export failed ({first_line(e, 300)})") from None
    try:
        write_bytes(path, buffer.getvalue())
    except (DiskFull, OSError) as e:
        raise ExportError(f"cannot write {path.name}: {first_line(e)}") from None
    return []


def build(job, say) -> list[Artifact]:
    """model.pt2 (fp32), exported on the CPU so its tensors load on any machine."""
    from ..files import file_name

    say(".pt2 fp32")
    dst = job.staging / file_name("pt2", "fp32")
    notes = export_pt2(job.model, job.example, dst, dynamic=job.dynamic, meta=job.meta, size=job.dynamic_size)
    return [Artifact(dst.name, "pt2", "fp32", notes=notes)]
