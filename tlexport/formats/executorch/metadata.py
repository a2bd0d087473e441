"""ExecuTorch metadata: the constant method `tlexport_metadata` of a `.pte` program, which returns
the JSON (no model code runs). Reading imports torch: ExecuTorch's runtime needs its libraries."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError, first_line
from ...tables.extras import not_installed
from ...fileio import parse_json

PTE_METHOD = "tlexport_metadata"  # ExecuTorch constant method returning the JSON


def read(path: Path) -> dict:
    try:
        import torch  # noqa: F401 - ExecuTorch's extension module needs torch's libraries loaded
        from executorch.runtime import Runtime
    except ImportError:
        raise UsageError(not_installed("executorch", f"{path}: reading .pte")) from None
    try:
        program = Runtime.get().load_program(str(path))
        if PTE_METHOD not in program.method_names:
            return {}
        text = program.load_method(PTE_METHOD).execute([])[0]
    except Exception as e:  # ExecuTorch raises plain RuntimeError/ValueError for bad files
        raise UsageError(f"{path} is not a readable .pte program ({first_line(e)})") from None
    return parse_json(text, f"{path}: {PTE_METHOD}")
