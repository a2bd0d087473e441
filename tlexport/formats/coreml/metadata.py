"""Core ML metadata: the `tlexport` entry of the model's user-defined metadata, read from the
package's specification (`Manifest.json` names it, `Data/<path>`) with coremltools' protobuf
classes, without loading or compiling the model (so on any system)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError, first_line
from ...fileio import parse_json, read_capped
from ...tables.extras import not_installed
from . import META_KEY

MAX_MANIFEST_BYTES = 1 << 20
MAX_SPEC_BYTES = 64 << 20  # the specification only: weights live in a separate file


def _bounded(path: Path, limit: int) -> bytes:
    return read_capped(path, limit, UsageError)


def spec_path(package: Path) -> Path:
    """The package's root specification file, as its Manifest.json names it (inside the package).

    Raises:
        UsageError: no readable manifest, or a root path that leaves the package.
    """
    package = Path(package)
    manifest = package / "Manifest.json"
    try:
        items = parse_json(_bounded(manifest, MAX_MANIFEST_BYTES), manifest, MAX_MANIFEST_BYTES, UsageError)
        entry = items["itemInfoEntries"][items["rootModelIdentifier"]]
        rel = Path("Data") / entry["path"]
    except (ValueError, RecursionError, KeyError, TypeError) as e:
        raise UsageError(f"{manifest} is not a Core ML package manifest ({type(e).__name__}: {first_line(e)})") from None
    root = package.resolve()
    path = (package / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(root) or path == root:
        raise UsageError(f"{manifest}: the model path {entry['path']!r} leaves the package; refused")
    return package / rel


def read_spec(package: Path):
    """The package's `Model` protobuf (coremltools.proto.Model_pb2).

    Raises:
        UsageError: coremltools missing (naming the install command) or an unreadable spec.
    """
    try:
        from coremltools.proto import Model_pb2
    except ImportError:
        raise UsageError(not_installed("coremltools", f"{package}: reading .mlpackage")) from None
    path = spec_path(package)
    model = Model_pb2.Model()
    try:
        model.ParseFromString(_bounded(path, MAX_SPEC_BYTES))
    except Exception as e:  # protobuf's DecodeError, or a message nested too deep
        raise UsageError(f"{path} is not a Core ML model specification ({first_line(e)})") from None
    return model


def read(path: Path) -> dict:
    """The JSON of the user-defined metadata entry `tlexport` ({} when absent)."""
    text = read_spec(path).description.metadata.userDefined.get(META_KEY)
    if not text:
        return {}
    meta = parse_json(text, f"{path}: its {META_KEY} metadata", error=UsageError)
    return meta if isinstance(meta, dict) else {}
