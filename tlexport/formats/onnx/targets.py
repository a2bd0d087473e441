"""`--target RUNTIME==VERSION`: export for a runtime release an app ships, and prove the files load
there. The opset and IR version come from the release's row of the measured table
(`compat.RELEASES`); each file is then checked statically against that row (opset, IR version,
and the features the release lacks) and, when that very runtime is importable here, by loading it
for real. The manifest records which of the two happened.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ExportError, UsageError, first_line
from .compat import READS, RELEASES, Release, describe, lacking

ALIASES = {"opencv-python": "opencv", "opencv-python-headless": "opencv", "cv2": "opencv",
           "tflite": "tflite-runtime", "ort": "onnxruntime", "onnxruntime-gpu": "onnxruntime"}
IMPORTS = {"onnxruntime": ("onnxruntime", "__version__"), "opencv": ("cv2", "__version__")}


@dataclass(frozen=True)
class Target:
    """A runtime release the user targets: `text` as typed, and its row of the table."""

    text: str
    release: Release

    @property
    def runtime(self) -> str:
        return self.release.runtime


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def parse(text: str) -> Target:
    """"onnxruntime==1.17" -> its Target (the tested release of that major.minor).

    Raises:
        UsageError: not RUNTIME==VERSION, or a runtime or release the table does not know
            (naming the known ones).
    """
    name, sep, version = text.strip().partition("==")
    runtime = ALIASES.get(name.strip().lower(), name.strip().lower())
    known = sorted({r.runtime for r in RELEASES})
    if not sep or not version.strip():
        raise UsageError(f"--target {text}: write RUNTIME==VERSION, e.g. onnxruntime==1.17 ({', '.join(known)})")
    if runtime not in known:
        raise UsageError(f"--target {text}: unknown runtime {name!r}; known: {', '.join(known)}")
    try:
        wanted = _minor(version.strip())
    except ValueError:
        raise UsageError(f"--target {text}: {version!r} is not a version number") from None
    rows = [r for r in RELEASES if r.runtime == runtime and _minor(r.version) == wanted]
    if not rows:
        versions = ", ".join(r.version for r in RELEASES if r.runtime == runtime)
        raise UsageError(f"--target {text}: {runtime} {version} is not in tlexport's measured table "
                         f"(benchmarks/compat.py); known releases: {versions}")
    return Target(text.strip(), rows[-1])


def parse_all(values) -> tuple[Target, ...]:
    """Each of `values` ("onnxruntime==1.17", one text or several) as a Target; Targets pass as they are."""
    values = (values,) if isinstance(values, str) else values or ()
    return tuple(v if isinstance(v, Target) else parse(v) for v in values)


def opset_for(targets, opset: int | None, exporter_min: int) -> int | None:
    """The opset satisfying every ONNX-reading target (None: no target constrains it).

    Raises:
        ExportError: a target reads no opset the exporter writes (exit 1).
        UsageError: --opset newer than a target reads.
    """
    readers = [t for t in targets if t.release.opset is not None]
    if not readers:
        return opset
    newest = min(t.release.opset for t in readers)
    oldest_reader = min(readers, key=lambda t: t.release.opset)
    if newest < exporter_min:
        raise ExportError(f"--target {oldest_reader.text}: {oldest_reader.runtime} {oldest_reader.release.version} "
                          f"reads ONNX opsets up to {newest}; torch's exporter writes {exporter_min} and newer")
    if opset is not None and opset > newest:
        raise UsageError(f"--opset {opset} is newer than --target {oldest_reader.text} reads (up to {newest})")
    return opset if opset is not None else min(newest, exporter_min)


def _installed_version(runtime: str) -> str | None:
    import importlib

    if runtime not in IMPORTS:
        return None
    module, attr = IMPORTS[runtime]
    try:
        return str(getattr(importlib.import_module(module), attr))
    except ImportError:
        return None


def _load_for_real(runtime: str, path) -> str | None:
    """None when the installed `runtime` loads `path`, else the reason."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime as ort

            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        else:
            import cv2

            cv2.dnn.readNetFromONNX(str(path))
    except Exception as e:
        return first_line(e)
    return None


def check(artifacts, folder, targets) -> None:
    """Check every artifact a target reads against it; record the outcome in `a.compat["targets"]`.

    Raises:
        ExportError: one line naming the file, the target and what that release lacks (exit 1).
    """
    for a in artifacts:
        path = folder / a.file
        facts = describe(path)
        a.compat = a.compat or {}
        for t in targets:
            if path.suffix not in READS[t.runtime]:
                continue
            missing = lacking(t.release, facts)
            if missing:
                raise ExportError(f"--target {t.text}: {a.file} needs what {t.runtime} {t.release.version} "
                                  f"lacks: {'; '.join(missing)}")
            record = {"target": t.text, "release": t.release.version, "checked": "static (tlexport's measured table)"}
            here = _installed_version(t.runtime)
            if here is not None and _minor(here) == _minor(t.release.version):
                reason = _load_for_real(t.runtime, path)
                if reason:
                    raise ExportError(f"--target {t.text}: {t.runtime} {here} cannot load {a.file} ({reason})")
                record["checked"] = f"loaded in {t.runtime} {here} here, and static"
            a.compat.setdefault("targets", []).append(record)
