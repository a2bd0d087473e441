"""What a format is, as data: `FormatSpec` and the rows it is made of, plus the shared vocabulary
(precisions, devices, artifact roles). Every format package defines one `SPEC`; the registry
lists them and everything else (export pipeline, runtime discovery, metadata readers, manifest
checks, CLI choices and help, docs/formats.md) is derived from those rows.

Torch-free, and free of tlexport imports beyond errors: the lowest floor of the format packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "cuda")
MODEL, BAKED = "model", "baked-preprocess"  # artifact roles: float NCHW input, or a decoded uint8 image
REFERENCE_RUNTIME = "torch-eager"  # the run's own weights in PyTorch: what every artifact is compared with
CALIB_METHODS = ("minmax", "percentile", "entropy")  # every --calib-method value tlexport knows
EDITABLE_INSTALL = "pip install -e '.[{extra}]'"


class MetadataReader(Protocol):
    """The plug-in contract of a format package's `metadata` module: its `read`.

    `read(path)` returns the metadata embedded in an artifact file (or folder) of the format, or
    `{}` when it carries none, without executing the model; `formats.metadata.read_metadata`
    validates the result against the one schema. It raises `UsageError` for a file it cannot
    read (naming the install hint when it needs an optional package).

    The other two parts of the contract sit on the floors of the modules that implement them:
    `tlexport.exporters.job.Builder` (a package's `build`) and `tlexport.runtimes.base.RuntimeFactory`
    (each entry of a package's `runtime.RUNTIMES`).
    """

    def __call__(self, path: Path) -> dict: ...


@dataclass(frozen=True)
class File:
    """One file a format writes into an export folder, by its fixed name.

    Args:
        precision: what it holds (fp32 / fp16 / int8).
        name: its path inside the export folder (a folder when the format's artifact is one).
        role: MODEL (float32 NCHW input: a parity/bench target) or BAKED (one decoded uint8 image in).
        cuda_only: it can only be built and run on a GPU (built only with --device cuda).
        companions: other files that belong to it (OpenVINO's weights beside its graph): listed
            with it in the manifest, published, replaced and removed with it.
    """

    precision: str
    name: str
    role: str = MODEL
    cuda_only: bool = False
    companions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """An optional Python package a format needs, and the one pip command every message naming it
    shows."""

    module: str  # the import name
    pip: str


@dataclass(frozen=True)
class Int8Support:
    """How a format's int8 honours `--calib-method` and `--int8-fallback`.

    Args:
        calib_methods: the `--calib-method` values it honours; any other is refused (exit 2).
        default_method: what calibrates when `--calib-method` is not given (in the manifest).
        per_layer: it can keep named layers in float, so `--int8-fallback NODE,...` works and
            `auto` searches for the fewest float layers; without it a node list is refused and
            `auto` is every layer int8 (checked by export's verification like any artifact).
        why: one line saying what it cannot do, shown when an option is refused.
    """

    calib_methods: tuple[str, ...]
    default_method: str
    per_layer: bool
    why: str = ""


@dataclass(frozen=True)
class FormatSpec:
    """An export format: everything tlexport knows about it without importing its package's code.

    Args:
        name: the name users type (`--format NAME`).
        package: the Python package holding its code: `<package>.build.build` (a
            `tlexport.exporters.job.Builder`), `<package>.metadata.read` (a `MetadataReader`)
            and, when it provides runtimes, `<package>.runtime.RUNTIMES` (each a
            `tlexport.runtimes.base.RuntimeFactory`), imported only when needed.
        suffix: the suffix of its artifact (a file, or a folder when `folder`).
        description: one line for tables and help.
        files: its fixed file names per precision and role; the precisions it exports are those
            of its MODEL files.
        runtimes: (runtime name, device) pairs that run it, the default runtime of a device first.
        provides: the runtime names its package's runtime module defines.
        runs_code: loading an artifact executes code stored in it (pickles, TorchScript): such
            files are only loaded when the user names them or passes --trust-code.
        folder: the artifact is a folder (a CoreML .mlpackage, an ncnn or web folder), not a file.
        by_suffix: a file of this suffix whose name tlexport does not know is taken to be of this
            format (False for Triton: its model.onnx is plain ONNX).
        needs: optional packages exporting it needs (refused up front when missing).
        extra: the pyproject.toml extra that installs `needs`.
        in_all: part of `--format core` (the formats that need no extra; `--format all` is every
            format whose extra is installed).
        built_from: the format whose staged files it is converted from (needs an ONNX opset).
        int8: how its int8 honours the int8 options (None: it has no int8).
        not_offered: ((precision, why), ...) for precisions it does not export and the one-line
            reason (a tool the registries lack): named in export's skip note and docs/formats.md.
        usage: what an app needs to use its artifacts (a few sentences of Markdown), rendered
            under its name in docs/formats.md ("In an app").
        dynamic_size: it can leave the image's height and width free (`--dynamic-size`);
            formats without it refuse the option.
        options: the name of its options class in `<package>.options` (None: it has none): a
            frozen dataclass whose fields are declared with `tlexport.formats.options.option`
            (flag, help, choices), from which `tlexport export`'s flags, `export()`'s keywords and
            `ExportOptions.of(name)` derive; imported only when options are read.
    """

    name: str
    package: str
    suffix: str
    description: str
    files: tuple[File, ...]
    runtimes: tuple[tuple[str, str], ...]
    provides: tuple[str, ...] = ()
    runs_code: bool = False
    folder: bool = False
    by_suffix: bool = True
    needs: tuple[Requirement, ...] = ()
    extra: str | None = None
    in_all: bool = False
    built_from: str | None = None
    int8: Int8Support | None = None
    not_offered: tuple[tuple[str, str], ...] = ()
    usage: str = ""
    dynamic_size: bool = False
    options: str | None = None

    def why_not(self, precision: str) -> str | None:
        """The recorded reason it does not export `precision` (None when none is recorded)."""
        return dict(self.not_offered).get(precision)

    @property
    def precisions(self) -> tuple[str, ...]:
        made = {f.precision for f in self.files if f.role == MODEL}
        return tuple(p for p in PRECISIONS if p in made)

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices its runtimes run it on (an artifact targets these unless it is cuda_only)."""
        return tuple(d for d in DEVICES if any(dev == d for _, dev in self.runtimes))

    def runtimes_on(self, device: str) -> list[str]:
        return [name for name, d in self.runtimes if d == device]

    def file(self, precision: str, role: str = MODEL) -> File | None:
        return next((f for f in self.files if (f.precision, f.role) == (precision, role)), None)

    @property
    def install(self) -> str | None:
        """The pip command that makes every `needs` importable (None when it needs nothing)."""
        return EDITABLE_INSTALL.format(extra=self.extra) if self.extra else None
