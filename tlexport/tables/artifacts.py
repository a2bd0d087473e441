"""The artifact table: every exported file tlexport knows, keyed by name, never by position.

One row per format says its suffix, whether loading it executes code, which runtimes run it on
which devices, and its precisions; one row per (format, precision, role) says the file name.
Exporters, runtimes, parity, bench and predict all read these rows, so a new format is a row here
plus one exporter and one runtime module. Beside the table: the manifest (`manifest.json`) that
lists what an export folder holds, and the answer to "which run made this export".

Torch-free to import.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError, UsageError

PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "cuda")
MANIFEST = "manifest.json"
MODEL, BAKED = "model", "baked-preprocess"  # artifact roles: float NCHW input, or uint8 NHWC input


@dataclass(frozen=True)
class Format:
    """An export format.

    Args:
        name: the name users type (`--format NAME`).
        suffix: the file suffix.
        runs_code: loading a file of this format executes code stored in it (pickles, TorchScript):
            such files are only loaded when the user names them or passes --trust-code.
        runtimes: (runtime name, device) pairs that run it, the default runtime of a device first.
        precisions: the precisions tlexport exports in this format.
        description: one line for tables and help.
        in_all: part of `--format all` (the edge and serving formats need optional extras and
            are asked for by name).
        from_onnx: made from tlexport's ONNX export (needs an opset).
    """

    name: str
    suffix: str
    runs_code: bool
    runtimes: tuple[tuple[str, str], ...]
    precisions: tuple[str, ...]
    description: str
    in_all: bool = True
    from_onnx: bool = False

    def runtimes_on(self, device: str) -> list[str]:
        return [name for name, d in self.runtimes if d == device]


FORMATS: dict[str, Format] = {
    f.name: f for f in (
        Format("onnx", ".onnx", False,
               (("onnxruntime", "cpu"), ("onnxruntime-cuda", "cuda"), ("onnxruntime-tensorrt", "cuda"),
                ("openvino", "cpu")),
               PRECISIONS, "ONNX (dynamo exporter), one self-contained file"),
        Format("torchscript", ".ts", True, (("torchscript", "cpu"), ("torchscript", "cuda")),
               ("fp32", "fp16"), "TorchScript (traced, frozen) for LibTorch/C++"),
        Format("pt2", ".pt2", True, (("pt2", "cpu"), ("pt2", "cuda")),
               ("fp32",), "torch.export ExportedProgram"),
        Format("openvino", ".xml", False, (("openvino", "cpu"),),
               PRECISIONS, "OpenVINO IR: model.xml (graph) + model.bin (weights)", in_all=False, from_onnx=True),
        # A .pte is a flatbuffer program of operator calls and constant data: loading it
        # deserialises data and calls kernels registered in the runtime, nothing from the file is
        # executed as Python (unlike TorchScript or pickled .pt2), so it does not runs_code.
        Format("executorch", ".pte", False, (("executorch", "cpu"),), ("fp32", "int8"),
               "ExecuTorch program, XNNPACK delegate (phones, boards)", in_all=False),
        Format("tflite", ".tflite", False, (("litert", "cpu"),), ("fp32", "int8"),
               "LiteRT / TFLite flatbuffer via litert-torch (Android, microcontrollers)", in_all=False),
        Format("ort", ".ort", False, (("onnxruntime", "cpu"),), ("fp32", "int8"),
               "ONNX Runtime mobile format + reduced-operator config", in_all=False, from_onnx=True),
        # A Triton model repository: the artifact is the ONNX model inside it; config.pbtxt and the
        # labels file travel beside it as its companions.
        Format("triton", ".onnx", False, (("onnxruntime", "cpu"), ("onnxruntime-cuda", "cuda")),
               ("fp32", "int8"), "Triton model repository (onnxruntime backend)", in_all=False, from_onnx=True),
    )
}
TRITON_REPO = "model_repository"


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of exported file.

    Args:
        format, precision: what it is.
        file: its fixed name in an export folder.
        role: MODEL (float32 NCHW input: a parity/bench target) or BAKED (uint8 NHWC input).
        cuda_only: it can only be built and run on a GPU.
        companions: other files that belong to it (OpenVINO's weights beside its graph, the ORT
            operator config, a Triton model's configs and labels): listed with it in the
            manifest, published, replaced and removed with it.
    """

    format: str
    precision: str
    file: str
    role: str = MODEL
    cuda_only: bool = False
    companions: tuple[str, ...] = ()

    @property
    def runs_code(self) -> bool:
        return FORMATS[self.format].runs_code


KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind("onnx", "fp32", "model.onnx"),
    ArtifactKind("onnx", "fp16", "model.fp16.onnx"),
    ArtifactKind("onnx", "int8", "model.int8.onnx"),
    ArtifactKind("onnx", "fp32", "model.uint8.onnx", role=BAKED),
    ArtifactKind("torchscript", "fp32", "model.ts"),
    ArtifactKind("torchscript", "fp16", "model.fp16.ts", cuda_only=True),
    ArtifactKind("pt2", "fp32", "model.pt2"),
    ArtifactKind("openvino", "fp32", "model.xml", companions=("model.bin",)),
    ArtifactKind("openvino", "fp16", "model.fp16.xml", companions=("model.fp16.bin",)),
    ArtifactKind("openvino", "int8", "model.int8.xml", companions=("model.int8.bin",)),
    ArtifactKind("executorch", "fp32", "model.pte"),
    ArtifactKind("executorch", "int8", "model.int8.pte"),
    ArtifactKind("tflite", "fp32", "model.tflite"),
    ArtifactKind("tflite", "int8", "model.int8.tflite"),
    ArtifactKind("ort", "fp32", "model.ort", companions=("model.required_operators.config",)),
    ArtifactKind("ort", "int8", "model.int8.ort", companions=("model.int8.required_operators.config",)),
    *(ArtifactKind("triton", p, f"{TRITON_REPO}/{name}/1/model.onnx",
                   companions=(f"{TRITON_REPO}/{name}/config.pbtxt", f"{TRITON_REPO}/{name}/configs/gpu.pbtxt",
                               f"{TRITON_REPO}/{name}/labels.txt"))
      for p, name in (("fp32", "classifier"), ("int8", "classifier_int8"))),
)
_BY_FILE = {k.file: k for k in KINDS}
# Every file (models and their companions) tlexport may have written into an export folder.
ALL_FILES = tuple(_BY_FILE) + tuple(c for k in KINDS for c in k.companions)


def companions_of(file: str) -> tuple[str, ...]:
    """The other files that belong to the artifact named `file` (by tlexport's fixed names, else
    by suffix: an OpenVINO `x.xml` comes with `x.bin`)."""
    if file in _BY_FILE:
        return _BY_FILE[file].companions
    return (str(Path(file).with_suffix(".bin")),) if Path(file).suffix == ".xml" else ()


def formats_in_all() -> tuple[str, ...]:
    """What `--format all` means: the desktop and server formats that need no optional extra (the
    edge and serving targets, and OpenVINO, are asked for by name)."""
    return tuple(name for name, f in FORMATS.items() if f.in_all)


def kind(fmt: str, precision: str, role: str = MODEL) -> ArtifactKind | None:
    """The row of (format, precision, role), or None when tlexport does not make that file."""
    return next((k for k in KINDS if (k.format, k.precision, k.role) == (fmt, precision, role)), None)


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
    if path.name in _BY_FILE:
        return _BY_FILE[path.name]
    fmt = format_of_suffix(path)
    inner = Path(path.stem).suffix.lstrip(".")
    precision = inner if inner in PRECISIONS else "fp32"
    return ArtifactKind(fmt, precision, path.name)


def format_of_suffix(path: Path | str) -> str:
    suffix = Path(path).suffix
    for f in FORMATS.values():
        if f.suffix == suffix:
            return f.name
    known = ", ".join(dict.fromkeys(f.suffix for f in FORMATS.values()))
    raise UsageError(f"{path}: unknown model type (expected {known} or an export folder)")


# ---- validation of the shared vocabulary ---------------------------------------------------------
def check_choices(values, allowed, what: str) -> tuple:
    """`values` (a name or an iterable of names) as a de-duplicated tuple, every one in `allowed`.

    Raises:
        UsageError: naming the unknown value(s) and the choices.
    """
    values = (values,) if isinstance(values, str) else tuple(values or ())
    values = tuple(dict.fromkeys(values))
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(map(str, unknown))}; choose from {', '.join(allowed)}")
    return values


def check_precisions(values) -> tuple:
    return check_choices(values, PRECISIONS, "precision")


def check_devices(values) -> tuple:
    values = check_choices(values, DEVICES, "device")
    if not values:
        raise UsageError(f"no device given; choose from {', '.join(DEVICES)}")
    return values


# ---- manifest -----------------------------------------------------------------------------------
ENTRY_FIELDS = {"file": str, "format": str, "precision": str, "role": str, "devices": list}


def read_manifest(export_dir: Path | str) -> dict | None:
    """The export folder's manifest.json, validated (None when the folder has none).

    Raises:
        ArtifactError: the manifest is unreadable or malformed (not an object, an entry without
            `file`, wrong types, unknown format/precision/device); one line naming manifest.json
            and the field.
    """
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not readable JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: must be a JSON object, not {type(manifest).__name__}")
    artifacts = manifest.get("artifacts", [])
    if not isinstance(artifacts, list):
        raise ArtifactError(f"{path}: field 'artifacts' must be a list, not {type(artifacts).__name__}")
    for i, entry in enumerate(artifacts):
        _check_entry(path, i, entry)
    if "run" in manifest and not isinstance(manifest["run"], (dict, type(None))):
        raise ArtifactError(f"{path}: field 'run' must be an object")
    return manifest


def _check_entry(path: Path, i: int, entry) -> None:
    where = f"{path}: artifacts[{i}]"
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where} must be an object, not {type(entry).__name__}")
    if "file" not in entry:
        raise ArtifactError(f"{where} has no 'file' field")
    for key, typ in ENTRY_FIELDS.items():
        if key in entry and not isinstance(entry[key], typ):
            raise ArtifactError(f"{where}.{key} must be a {typ.__name__}, not {type(entry[key]).__name__}")
    if not entry["file"] or "\x00" in entry["file"]:
        raise ArtifactError(f"{where}.file is empty or not a file name")
    fmt = entry.get("format")
    if fmt not in FORMATS:
        raise ArtifactError(f"{where}.format {fmt!r} is not one of {', '.join(FORMATS)}")
    if Path(entry["file"]).suffix != FORMATS[fmt].suffix:
        raise ArtifactError(f"{where}.file {entry['file']!r} lacks the {FORMATS[fmt].suffix} suffix of format {fmt}")
    if entry.get("precision") not in PRECISIONS:
        raise ArtifactError(f"{where}.precision {entry.get('precision')!r} is not one of {', '.join(PRECISIONS)}")
    if entry.get("role", MODEL) not in (MODEL, BAKED):
        raise ArtifactError(f"{where}.role {entry.get('role')!r} is not one of {MODEL}, {BAKED}")
    bad = [d for d in entry.get("devices") or () if d not in DEVICES]
    if bad:
        raise ArtifactError(f"{where}.devices holds {bad[0]!r}; allowed: {', '.join(DEVICES)}")


def write_manifest(export_dir: Path | str, manifest: dict) -> Path:
    """Write manifest.json atomically (it is written last: its presence means the folder is whole)."""
    from ..fileio import write_json

    path = Path(export_dir) / MANIFEST
    write_json(path, manifest)
    return path


def inside(folder: Path | str, name: str) -> Path | None:
    """`folder/name` when it resolves inside `folder` (after following every symlink), else None.
    Absolute names, `..` and links that leave the folder all resolve outside."""
    folder = Path(folder)
    if not name or Path(name).is_absolute():
        return None
    try:
        root = folder.resolve(strict=True)
        target = (folder / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop, an unreadable folder
        return None
    return folder / name if target != root and target.is_relative_to(root) else None


@dataclass(frozen=True)
class Entry:
    """An artifact found in an export folder; `refused` says why it must not be loaded."""

    path: Path
    format: str
    precision: str
    role: str = MODEL
    devices: tuple[str, ...] = DEVICES
    refused: str | None = None

    @property
    def runs_code(self) -> bool:
        return FORMATS[self.format].runs_code


def list_artifacts(export_dir: Path | str) -> list[Entry]:
    """The artifacts of an export folder: its manifest's entries when it has one, else tlexport's
    fixed file names that exist. An entry whose path resolves outside the folder (`..`, an
    absolute path, a symlink leading out) is returned with `refused` set and must not be opened.

    Raises:
        ArtifactError: a malformed manifest (see read_manifest).
    """
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is not None:
        rows = [(a["file"], a["format"], a["precision"], a.get("role", MODEL), tuple(a.get("devices") or DEVICES))
                for a in manifest.get("artifacts", [])]
    else:
        rows = [(k.file, k.format, k.precision, k.role, DEVICES) for k in KINDS
                if os.path.lexists(export_dir / k.file)]
    out = []
    for name, fmt, precision, role, devices in rows:
        path = inside(export_dir, name)
        if path is None:
            reason = f"{MANIFEST} entry {name!r} resolves outside {export_dir}; refused" if manifest is not None \
                else f"{name} is a link that leads outside {export_dir}; refused"
            out.append(Entry(export_dir / Path(name).name, fmt, precision, role, devices, refused=reason))
        elif path.is_file():
            out.append(Entry(path, fmt, precision, role, devices))
    return out


def find_run_dir(export_dir: Path | str, run_dir=None, *, required: bool = True) -> Path | None:
    """The run an export came from: `run_dir` when given, else the manifest's record, else the
    export folder's parent (tlexport writes RUN/export by default), else the folder itself.

    Raises:
        UsageError: none of them holds run.json and `required` is set (else None).
    """
    export_dir = Path(export_dir)
    if run_dir is not None:
        return Path(run_dir).expanduser()
    try:
        manifest = read_manifest(export_dir) or {}
    except ArtifactError:
        manifest = {}  # the run is found from the parent folder; the artifacts' reader reports it
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    recorded = [Path(c) for c in (run.get("dir"),) if isinstance(c, str) and c]
    from ..run import RUN_JSON

    for cand in (*recorded, export_dir.parent, export_dir):
        if (cand / RUN_JSON).is_file():
            return cand
    if not required:
        return None
    raise UsageError(f"cannot find the training run of {export_dir} (no {RUN_JSON} in its manifest's "
                     "run dir or parent folder); pass --run-dir")
