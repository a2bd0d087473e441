"""The metadata of zip-archive formats (TorchScript, .pt2): a `tlexport.json` extra file at
`<root>/extra/tlexport.json`, read with `zipfile` (nothing in the archive is loaded or run)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import ArtifactError, UsageError, first_line
from ..tables.metadata import validate
from ..fileio import parse_json

EXTRA_FILE = "tlexport.json"
MAX_EXTRA = 16 << 20  # class names of 100k labels fit in a few MB


def read_extra(path: Path) -> dict:
    """The archive's `tlexport.json`, validated ({} when it has none)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            if not names:
                return {}
            info = z.getinfo(names[0])
            if info.file_size > MAX_EXTRA:
                raise ArtifactError(f"{path}: embedded {EXTRA_FILE} is implausibly large ({info.file_size} bytes)")
            text = z.read(names[0]).decode()
    except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as e:
        raise UsageError(f"{path} is not a readable model archive ({first_line(e)})") from None
    meta = parse_json(text, f"{path}: embedded {EXTRA_FILE}", MAX_EXTRA)
    return validate(meta, path)
