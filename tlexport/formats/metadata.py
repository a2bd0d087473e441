"""`read_metadata`: the embedded metadata of any artifact, by the reader of its format's package."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UsageError
from ..tables.metadata import validate
from . import registry
from .spec import MetadataReader


def reader(fmt: str) -> MetadataReader:
    """The `read(path) -> dict` of a format's package (its module is imported on first use)."""
    return importlib.import_module(f"{registry.get(fmt).package}.metadata").read


def read_metadata(path: Path | str) -> dict:
    """Read the embedded metadata of an artifact without running it.

    Args:
        path: an artifact file (or folder) of any registered format.
    Returns:
        {"classes", "preprocess", "arch", "weights_sha256", "tlexport_version", "torch_version",
         "batch"}, validated (see `tables.metadata.validate`); an empty dict when it carries none.
    Raises:
        UsageError: the file is missing or not a model tlexport knows.
        ArtifactError: metadata that breaks the schema (one line naming the field).
    """
    from .files import kind_of_file

    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file {path} does not exist")
    kind = kind_of_file(path)
    if path.is_dir() != kind.folder:
        what = "a folder" if path.is_dir() else "a file"
        raise UsageError(f"{path} is {what}, but a {kind.format} model is {'a folder' if kind.folder else 'a file'}")
    return validate(reader(kind.format)(path), path)  # every reader's result meets the one schema
