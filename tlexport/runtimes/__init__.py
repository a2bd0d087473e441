"""The runtime registry: every runtime that can run a tlexport model, by name, and discovery of
what an export folder allows. parity, bench and predict use it alike.

Runtimes are found through the format registry: each format package that `provides` runtimes
has a `runtime` module whose `RUNTIMES` are listed here under their names, each a
`RuntimeFactory` (a `Runtime` subclass, or a row of data bound to the class that runs it, such as
an onnxruntime execution provider); which runtimes run a format on which device is its spec's
`runtimes`. torch-eager, the reference, lives here. Torch-free to import.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UsageError
from ..formats import registry
from ..formats.spec import REFERENCE_RUNTIME
from ..tables import artifacts as table
from .base import Runtime, RuntimeFactory, Skipped
from .torch_rt import TorchEager

REFERENCE = REFERENCE_RUNTIME
CODE_REASON = "loading it runs code stored in the file; name the file or pass --trust-code"


def _classes() -> dict[str, RuntimeFactory]:
    """Runtime name -> what makes it: `kind(artifact, precision, device, run_dir=, threads=)`, with
    `kind.unavailable_reason(device, precision)`. Built from the registry on each call (imports
    are cached by Python), so a format registered at run time is seen."""
    out: dict[str, RuntimeFactory] = {REFERENCE: TorchEager}
    for spec in registry.FORMATS.values():
        if spec.provides:
            for kind in importlib.import_module(f"{spec.package}.runtime").RUNTIMES:
                out[kind.name] = kind
    return out


def runtime_names() -> tuple[str, ...]:
    return registry.runtime_names()


def __getattr__(name: str):
    if name == "RUNTIME_NAMES":  # derived from the registry whenever it is read
        return runtime_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def runtime_class(name: str) -> RuntimeFactory:
    """What makes runtime `name` (UsageError for unknown names)."""
    classes = _classes()
    if name not in classes:
        raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(classes)}")
    return classes[name]


def check_names(names) -> tuple:
    """Runtime names, validated (UsageError naming unknown ones)."""
    return table.check_choices(names, runtime_names(), "runtime")


def for_artifact(path: Path | str, device: str = "cpu", threads: int | None = None) -> Runtime:
    """The default runtime of one artifact file on `device` (not loaded). The caller named the
    file, so code-bearing formats are allowed here."""
    path = Path(path)
    kind = table.kind_of_file(path)
    names = registry.get(kind.format).runtimes_on(device)
    if not names:
        raise UsageError(f"{path.name}: no runtime runs {kind.format} on {device}")
    return runtime_class(names[0])(path, kind.precision, device, threads=threads)


def reference_runtime(run_dir: Path | str, device: str = "cpu") -> Runtime:
    """torch-eager fp32 from the run directory's best weights (not loaded)."""
    return TorchEager(None, "fp32", device, run_dir=run_dir)


def discover(export_dir: Path | str, *, run_dir: Path | str | None = None, names: list[str] | None = None,
             devices: tuple[str, ...] = ("cpu",), precisions: tuple[str, ...] | None = None,
             threads: int | None = None, trust_code: bool = False) -> tuple[list[Runtime], list[Skipped]]:
    """Every (runtime, precision, device) the export folder's artifacts allow.

    Args:
        export_dir: folder written by `tlexport export`.
        run_dir: run directory for torch-eager (default: the one the export records, see
            `tables.artifacts.find_run_dir`; torch-eager is skipped when none is found).
        names: runtime names to consider (default: every runtime).
        devices: devices to consider ("cpu", "cuda").
        precisions: precisions to keep (default: all).
        threads: intra-op threads passed to every runtime.
        trust_code: also offer artifacts whose loading executes code (TorchScript, .pt2); without
            it they are listed as skipped with the reason.
    Returns:
        (not-loaded runtimes, skipped combinations with the reason).
    Raises:
        UsageError: unknown runtime name, device or precision; export_dir missing.
        ArtifactError: a malformed manifest.json (one line naming the field).
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UsageError(f"export folder {export_dir} does not exist")
    classes = _classes()
    names = [runtime_class(n).name for n in names] if names else list(classes)
    devices = table.check_devices(devices)
    precisions = table.check_precisions(precisions) if precisions else None
    wanted = lambda p: precisions is None or p in precisions  # noqa: E731
    found, skipped = [], []

    def consider(name, path, precision, device, run=None, refuse=None):
        reason = refuse or classes[name].unavailable_reason(device, precision)
        if reason:
            skipped.append(Skipped(name, precision, device, reason))
        else:
            found.append(classes[name](path, precision, device, run_dir=run, threads=threads))

    if REFERENCE in names:
        run = table.find_run_dir(export_dir, run_dir, required=False)
        for device in devices:
            for precision in ("fp32", "fp16"):
                if not wanted(precision) or (precision == "fp16" and device == "cpu"):
                    continue
                if run is None:
                    skipped.append(Skipped(REFERENCE, precision, device, "run directory not found"))
                else:
                    consider(REFERENCE, None, precision, device, run)
    for entry in table.list_artifacts(export_dir):
        if entry.role != table.MODEL or not wanted(entry.precision):
            continue
        # A path leaving the folder is refused even with --trust-code: the user trusted this
        # folder, not whatever a manifest points at.
        refuse = entry.refused or (CODE_REASON if entry.runs_code and not trust_code else None)
        for name, device in registry.get(entry.format).runtimes:
            if name in names and device in devices:
                off_target = None if device in entry.devices else f"{entry.path.name} targets {', '.join(entry.devices)} only"
                consider(name, entry.path, entry.precision, device, refuse=refuse or off_target)
    return found, skipped


__all__ = ["Runtime", "RuntimeFactory", "Skipped", "RUNTIME_NAMES", "runtime_class", "runtime_names", "for_artifact",
           "reference_runtime", "discover", "check_names"]
