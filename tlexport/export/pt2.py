"""`.pt2` export: a torch.export ExportedProgram (TorchScript's successor) with metadata inside."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import ExportError
from . import metadata as md
from .onnx import _short


def export_pt2(module, example, path: Path, *, dynamic: bool, meta: dict) -> list[str]:
    """torch.export.export with a free batch dimension, saved with `tlexport.json` in the archive.

    Args:
        module: nn.Module in eval mode.
        example: example input (batch 2 when dynamic: batch 1 would be specialised).
        path: destination (temporary name).
        dynamic: leave the batch dimension free.
        meta: metadata dict.
    Returns:
        notes for the manifest.
    Raises:
        ExportError: torch.export failed.
    """
    import torch

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
            torch.export.save(program, str(path), extra_files={md.EXTRA_FILE: md.to_json(meta)})
    except Exception as e:
        raise ExportError(f"torch.export failed ({_short(e)})") from None
    return []
