"""What a file in an export folder is: the one home of the lookups derived from the format
registry's `File` rows (each format's fixed file names per precision and role, its companions,
its suffix, whether its artifact is a folder). The file of a (format, precision, role), the kind
of a file by name or suffix, every name tlexport may write, what looks like a model.

`tlexport.tables.artifacts` re-exports these beside the manifest and the operations on artifacts
that may be folders. Everything is derived on each call, so a format registered at run time (as
the tests register throwaway ones) is seen at once. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from . import registry
from .spec import MODEL, PRECISIONS, File, FormatSpec


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of exported file: a `File` row of a format's spec, with the format's name.

    Args:
        format, precision: what it is.
        file: its fixed name in an export folder.
        role: MODEL (float32 NCHW input: a parity/bench target) or BAKED (one decoded uint8 image in).
        cuda_only: it can only be built and run on a GPU.
        companions: other files that belong to it (OpenVINO's weights beside its graph, the ORT
            operator config, a Triton model's configs and labels).
    """

    format: str
    precision: str
    file: str
    role: str = MODEL
    cuda_only: bool = False
    companions: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: FormatSpec, row: File) -> "ArtifactKind":
        return cls(spec.name, row.precision, row.name, row.role, row.cuda_only, row.companions)

    @property
    def runs_code(self) -> bool:
        return registry.FORMATS[self.format].runs_code

    @property
    def folder(self) -> bool:
        return registry.FORMATS[self.format].folder


def kinds() -> tuple[ArtifactKind, ...]:
    """Every file tlexport makes, in registry order."""
    return tuple(ArtifactKind.of(s, f) for s in registry.FORMATS.values() for f in s.files)


def all_files() -> tuple[str, ...]:
    """Every file (models and their companions) tlexport may have written into an export folder."""
    ks = kinds()
    return tuple(dict.fromkeys([k.file for k in ks] + [c for k in ks for c in k.companions]))


def _by_file() -> dict[str, ArtifactKind]:
    return {k.file: k for k in kinds()}


def companions_of(file: str) -> tuple[str, ...]:
    """The other files that belong to the artifact named `file` (by tlexport's fixed names, else
    by suffix: an OpenVINO `x.xml` comes with `x.bin`)."""
    row = _by_file().get(file)
    if row is not None:
        return row.companions
    return (str(Path(file).with_suffix(".bin")),) if Path(file).suffix == ".xml" else ()


def kind(fmt: str, precision: str, role: str = MODEL) -> ArtifactKind | None:
    """The row of (format, precision, role), or None when tlexport does not make that file."""
    spec = registry.FORMATS.get(fmt)
    row = spec.file(precision, role) if spec is not None else None
    return ArtifactKind.of(spec, row) if row is not None else None


def file_name(fmt: str, precision: str, role: str = MODEL) -> str:
    row = kind(fmt, precision, role)
    if row is None:
        raise UsageError(f"tlexport makes no {precision} {fmt} file")
    return row.file


def kind_of_file(path: Path | str) -> ArtifactKind:
    """What a file is, from tlexport's fixed names, else from its suffix (`x.int8.onnx`: int8).

    Raises:
        UsageError: a suffix no format has.
    """
    path = Path(path)
    row = _by_file().get(path.name)
    if row is not None:
        return row
    fmt = format_of_suffix(path)
    inner = Path(path.stem).suffix.lstrip(".")
    precision = inner if inner in PRECISIONS else "fp32"
    return ArtifactKind(fmt, precision, path.name)


def _by_suffix() -> tuple[FormatSpec, ...]:
    """The formats a file of their suffix is taken to be (not Triton: its model.onnx is plain ONNX)."""
    return tuple(f for f in registry.FORMATS.values() if f.by_suffix)


def format_of_suffix(path: Path | str) -> str:
    suffix = Path(path).suffix
    for f in _by_suffix():
        if f.suffix == suffix:
            return f.name
    known = ", ".join(dict.fromkeys(f.suffix for f in _by_suffix()))
    raise UsageError(f"{path}: unknown model type (expected {known} or an export folder)")


def is_folder_artifact(path: Path | str) -> bool:
    """`path` is a folder that is itself a model (a folder format's suffix), not an export folder."""
    path = Path(path)
    return path.is_dir() and any(f.folder and f.suffix == path.suffix for f in _by_suffix())


def model_globs() -> tuple[str, ...]:
    """`*<suffix>` of every registered format: what a model file's name looks like."""
    return tuple(dict.fromkeys(f"*{f.suffix}" for f in registry.FORMATS.values()))


def is_model_name(path: Path | str) -> bool:
    """`path` is named like a model file of some registered format (its suffix)."""
    return any(Path(path).match(g) for g in model_globs())
