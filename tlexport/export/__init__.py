"""`tlexport export`: run directory -> self-describing artifacts + manifest.json.

Formats live in a registry keyed by name (`FORMATS`); each builder writes its files into a
private staging folder inside the output folder. Nothing is moved into place until every
artifact has been written, checked and verified, so a failed export leaves no partial artifact.

This package's import is torch-free (`metadata.read_metadata` is used by torch-free predict).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ExportError, TlexportError, UsageError

PRECISIONS = ("fp32", "fp16", "int8")
FILE_NAMES = {
    ("onnx", "fp32"): "model.onnx", ("onnx", "fp16"): "model.fp16.onnx",
    ("onnx", "int8"): "model.int8.onnx", ("torchscript", "fp32"): "model.ts",
    ("torchscript", "fp16"): "model.fp16.ts", ("pt2", "fp32"): "model.pt2",
}
BAKED_FILE = "model.uint8.onnx"
ALL_FILES = (*FILE_NAMES.values(), BAKED_FILE)


@dataclass
class Artifact:
    """One exported file, as recorded in manifest.json."""

    file: str
    format: str
    precision: str
    role: str = "model"  # "model" | "baked-preprocess" (uint8 NHWC input)
    size: int = 0
    sha256: str = ""
    opset: int | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    device: str = "cpu"
    notes: list = field(default_factory=list)
    verified: bool | None = None
    verification: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportResult:
    """What `export()` wrote: the folder, its artifacts, the manifest dict, skipped variants."""

    out_dir: Path
    artifacts: list[Artifact]
    manifest: dict
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "artifacts": [a.to_dict() for a in self.artifacts],
                "skipped": self.skipped, "seconds": round(self.seconds, 2)}


@dataclass
class Job:
    """Everything a format builder needs."""

    run: object
    model: object  # eval-mode nn.Module on `device`
    meta: dict
    example: object  # torch tensor, float32 NCHW
    dynamic: bool
    device: str
    opset: int
    staging: Path
    precisions: tuple
    options: dict


def _build_onnx(job: Job, say) -> tuple[list[Artifact], list[str]]:
    """model.onnx (always staged: fp16/int8/uint8 derive from it), fp16, int8, baked uint8."""
    import torch

    from . import onnx as ox
    from . import quantize

    base = job.staging / FILE_NAMES["onnx", "fp32"]
    say("ONNX fp32")
    ox.export_onnx(job.model, job.example, base, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
    out = [Artifact(base.name, "onnx", "fp32")] if "fp32" in job.precisions else []
    if "fp16" in job.precisions:
        say("ONNX fp16")
        dst = job.staging / FILE_NAMES["onnx", "fp16"]
        quantize.to_fp16(base, dst, fp16_io=job.options["fp16_io"], meta=job.meta)
        out.append(Artifact(dst.name, "onnx", "fp16", notes=["fp16 input/output" if job.options["fp16_io"]
                                                             else "float32 input/output"]))
    if "int8" in job.precisions:
        say("ONNX int8 (calibrating)")
        out.append(_build_int8(job, base))
    if job.options["bake_preprocess"]:
        say("ONNX uint8 (baked preprocessing)")
        dst = job.staging / BAKED_FILE
        baked = ox.BakedPreprocess.wrap(job.model, job.run.preprocess)
        n, _, h, w = job.example.shape
        example = torch.zeros((n, h, w, 3), dtype=torch.uint8, device=job.example.device)
        ox.export_onnx(baked, example, dst, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
        out.append(Artifact(dst.name, "onnx", "fp32", role="baked-preprocess",
                            notes=["input uint8 NHWC RGB at the crop size; normalisation inside"]))
    return out, []


def _build_int8(job: Job, base: Path) -> Artifact:
    from . import quantize

    o = job.options
    files = quantize.calibration_images(job.run, o["calib_data"], o["calib_size"])
    batch = 16 if job.dynamic else int(job.example.shape[0])
    batches = quantize.calibration_batches(files, job.run.preprocess, batch)
    dst = job.staging / FILE_NAMES["onnx", "int8"]
    quantize.to_int8(base, dst, batches=batches, method=o["calib_method"], meta=job.meta)
    source = str(o["calib_data"]) if o["calib_data"] else "run train split"
    return Artifact(dst.name, "onnx", "int8", notes=[
        f"QDQ static, per-channel int8 weights, uint8 activations; {o['calib_method']} calibration "
        f"on {len(files)} images from {source}"])


def _build_torchscript(job: Job, say) -> tuple[list[Artifact], list[str]]:
    from .torchscript import export_torchscript

    out, skipped = [], []
    for precision in job.precisions:
        if precision == "int8":
            skipped.append("torchscript int8: int8 is produced for ONNX only")
            continue
        if precision == "fp16" and job.device != "cuda":
            skipped.append("torchscript fp16: needs --device cuda (fp16 TorchScript runs on CUDA only)")
            continue
        say(f"TorchScript {precision}")
        half = precision == "fp16"
        model = job.model.half() if half else job.model
        example = job.example.half() if half else job.example
        dst = job.staging / FILE_NAMES["torchscript", precision]
        try:
            notes = export_torchscript(model, example, dst, dynamic=job.dynamic, meta=job.meta)
        finally:
            if half:
                job.model.float()
        out.append(Artifact(dst.name, "torchscript", precision, device=job.device, notes=notes))
    return out, skipped


def _build_pt2(job: Job, say) -> tuple[list[Artifact], list[str]]:
    from .pt2 import export_pt2

    skipped = [f"pt2 {p}: only fp32 .pt2 is produced" for p in job.precisions if p != "fp32"]
    if "fp32" not in job.precisions:
        return [], skipped
    say(".pt2 fp32")
    dst = job.staging / FILE_NAMES["pt2", "fp32"]
    notes = export_pt2(job.model, job.example, dst, dynamic=job.dynamic, meta=job.meta)
    return [Artifact(dst.name, "pt2", "fp32", device=job.device, notes=notes)], skipped


# The format registry: name -> builder(job, say) -> (artifacts, skipped notes).
FORMATS: dict[str, Callable] = {"onnx": _build_onnx, "torchscript": _build_torchscript, "pt2": _build_pt2}


def _check_options(formats, precisions, batch, device, calib_method, calib_size, bake_preprocess):
    """Normalise and validate the user's choices before any heavy work.

    Returns:
        (formats tuple, precisions tuple, fixed batch or None)
    """
    from .quantize import CALIB_METHODS

    formats = tuple(formats) if not isinstance(formats, str) else (formats,)
    formats = tuple(FORMATS) if "all" in formats else tuple(dict.fromkeys(formats))
    for f in formats:
        if f not in FORMATS:
            raise UsageError(f"unknown format {f!r}; choose from {', '.join(FORMATS)} or all")
    precisions = tuple(dict.fromkeys((precisions,) if isinstance(precisions, str) else precisions))
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if not formats or not precisions:
        raise UsageError("nothing to export: give at least one format and one precision")
    fixed = None
    if str(batch) != "dynamic":
        try:
            fixed = int(batch)
        except ValueError:
            fixed = 0
        if fixed < 1:
            raise UsageError(f"--batch must be 'dynamic' or a positive integer, not {batch!r}")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda")
    if calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown calibration method {calib_method!r}; choose from {', '.join(CALIB_METHODS)}")
    if int(calib_size) < 1:
        raise UsageError("--calib-size must be at least 1")
    if bake_preprocess and "onnx" not in formats:
        raise UsageError("--bake-preprocess makes an ONNX model: add --format onnx")
    return formats, precisions, fixed


def _prepare_out(run_dir: Path, out) -> Path:
    out = Path(out).expanduser() if out is not None else run_dir / "export"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out} ({e.strerror})") from None
    return out


def export(run_dir, formats=("onnx",), precisions=("fp32",), out=None, opset=None, batch="dynamic",
           device="cpu", calib_size=256, calib_method="minmax", calib_data=None, fp16_io=False,
           bake_preprocess=False, verify=True, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export a run's best weights to the requested formats and precisions.

    Args:
        run_dir: run directory written by `tlexport train`.
        formats: names from FORMATS, or "all".
        precisions: fp32 / fp16 / int8 (fp16 TorchScript needs device="cuda"; int8 is ONNX only).
        out: output folder (default RUN_DIR/export); tlexport's file names in it are replaced.
        opset: ONNX opset (default: newest that both the exporter and onnxruntime support).
        batch: "dynamic" (free batch dimension) or a fixed batch size.
        device: "cpu" or "cuda" for tracing.
        calib_size, calib_method, calib_data: int8 calibration (see quantize.py).
        fp16_io: fp16 ONNX takes and returns float16 instead of float32.
        bake_preprocess: also write model.uint8.onnx (uint8 NHWC input, normalisation inside).
        verify: compare every artifact with torch-eager and fail on a broken gate.
        progress: called with a short description as each step starts.
    Returns:
        ExportResult.
    Raises:
        UsageError, WeightsError, ExportError: one-line messages; nothing partial is left behind.
    """
    from ..models import load_run

    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    formats, precisions, fixed = _check_options(formats, precisions, batch, device, calib_method,
                                                calib_size, bake_preprocess)
    run = load_run(run_dir)
    _check_device(device)
    opset = _resolve_opset(formats, opset)
    say("loading weights")
    model = run.load_model("best", device=device)
    created = not (Path(out).expanduser() if out is not None else run.dir / "export").exists()
    out_dir = _prepare_out(run.dir, out)
    staging = out_dir / f".tlexport-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    published = False
    try:
        job = _make_job(run, model, device, fixed, opset, staging, precisions,
                        dict(calib_size=int(calib_size), calib_method=calib_method, calib_data=calib_data,
                             fp16_io=fp16_io, bake_preprocess=bake_preprocess))
        artifacts, skipped = [], []
        for name in formats:
            made, notes = FORMATS[name](job, say)
            artifacts += made
            skipped += notes
        if not artifacts:
            raise ExportError("nothing could be exported: " + "; ".join(skipped))
        result = ExportResult(staging, artifacts, {}, skipped)
        _describe(result, run.preprocess.crop, "batch" if job.dynamic else fixed)
        if verify:
            say("verifying against torch-eager")
            _verify(result, run)
        result.manifest = _manifest(result, run, job, verify)
        _publish(result, out_dir)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not published:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if still empty: a failed export leaves no trace
    result.seconds = time.perf_counter() - started
    return result


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here (use --device cpu)")


def _resolve_opset(formats, opset):
    from .onnx import resolve_opset

    if "onnx" in formats:
        return resolve_opset(opset)
    return None


def _make_job(run, model, device, fixed, opset, staging, precisions, options) -> Job:
    import torch

    from ..fileio import sha256
    from .metadata import build_metadata

    crop = run.preprocess.crop
    # Batch 2 for a dynamic export: torch.export specialises a dimension seen as 1.
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(fixed or 2, 3, crop, crop, generator=gen).to(device)
    meta = build_metadata(run, sha256(run.weights_file("best")), fixed)
    return Job(run, model, meta, example, fixed is None, device, opset, staging, precisions, options)


def _describe(result: ExportResult, crop: int, batch) -> None:
    """Fill size, sha256, opset and input/output spec of each staged artifact."""
    from ..fileio import sha256
    from .onnx import io_spec, opset_of

    for a in result.artifacts:
        path = result.out_dir / a.file
        a.size, a.sha256 = path.stat().st_size, sha256(path)
        if a.format == "onnx":
            a.opset = opset_of(path)
            a.inputs, a.outputs = io_spec(path)
        else:
            dtype = "float16" if a.precision == "fp16" else "float32"
            a.inputs = [{"name": "image", "dtype": dtype, "shape": [batch, 3, crop, crop]}]
            a.outputs = [{"name": "logits", "dtype": dtype, "shape": [batch, "classes"]}]


def _manifest(result: ExportResult, run, job: Job, verify: bool) -> dict:
    import platform

    import numpy
    import onnx
    import onnxruntime
    import torch
    import torchvision

    from .. import __version__

    return {
        "tlexport_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": {"dir": str(run.dir.resolve()), "arch": run.arch, "classes": run.classes,
                "preprocess": run.preprocess.to_dict(), "weights_sha256": job.meta["weights_sha256"],
                "versions": run.meta.get("versions", {})},
        "batch": "dynamic" if job.dynamic else int(job.example.shape[0]),
        "device": job.device,
        "opset": job.opset,
        "artifacts": [a.to_dict() for a in result.artifacts],
        "skipped": result.skipped,
        "verification": result.manifest.get("verification") if verify else {"skipped": "--no-verify"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__},
    }


def _publish(result: ExportResult, out_dir: Path) -> None:
    """Move the staged files into place, then write manifest.json last. Older tlexport artifacts
    that this export did not produce are removed so the folder matches its manifest."""
    from ..fileio import write_json

    made = {a.file for a in result.artifacts}
    with contextlib.suppress(FileNotFoundError):
        (out_dir / "manifest.json").unlink()
    for name in ALL_FILES:
        if name not in made:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
    for a in result.artifacts:
        os.replace(result.out_dir / a.file, out_dir / a.file)
    write_json(out_dir / "manifest.json", result.manifest)
    result.out_dir = out_dir


# The runtime that checks each format in export's self-verification.
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "torchscript": "torchscript", "pt2": "pt2"}
VERIFY_IMAGES = 128  # one flip is < 1 point of accuracy, so a single near-tie cannot fail int8


def _verify(result: ExportResult, run) -> None:
    """Compare every staged artifact with torch-eager; record per-artifact outcomes in
    `artifact.verification` and the summary in `result.manifest["verification"]`.

    Raises:
        ExportError: a gate failed (the caller then publishes nothing).
    """
    from ..parity import parity
    from .verify import verify_baked

    models = [a for a in result.artifacts if a.role == "model"]
    runtimes = sorted({RUNTIME_OF_FORMAT[a.format] for a in models})
    devices = ("cpu", "cuda") if any(a.device == "cuda" for a in models) else ("cpu",)
    report = parity(result.out_dir, run_dir=run.dir, runtimes=runtimes, devices=devices,
                    max_images=VERIFY_IMAGES)
    rows = {(r.runtime, r.precision): r for r in report.results if r.skipped_reason is None}
    for a in models:
        row = rows.get((RUNTIME_OF_FORMAT[a.format], a.precision))
        if row is None:
            continue  # e.g. fp16 TorchScript on a device parity could not use: stays unverified
        a.verified = bool(row.passed)
        a.verification = {
            "passed": a.verified, "max_abs": row.max_abs, "mean_abs": row.mean_abs,
            "top1_agreement": (row.top1_agreement or 0.0) / 100, "flips": len(row.flips),
            "reason": "; ".join(row.failures) or None, "inputs": report.source,
        }
    baked = [a for a in result.artifacts if a.role != "model"]
    if baked:  # uint8 NHWC input: not a parity target, checked against torch-eager directly
        verify_baked(result.out_dir, baked, run)
    summary = {k: v for k, v in report.to_dict().items() if k in ("passed", "reference", "images", "source", "tolerances", "notes")}
    summary["passed"] = all(a.verified is not False for a in result.artifacts)
    result.manifest["verification"] = summary
    failed = [a for a in result.artifacts if a.verified is False]
    if failed:
        why = "; ".join(f"{a.file}: {a.verification['reason']}" for a in failed)
        hint = ""
        if any(a.precision == "int8" for a in failed):
            hint = (" int8 flips near-tied predictions, which an undertrained model has many of; "
                    "try --calib-method percentile or more --calib-size, or inspect with `tlexport parity`.")
        raise ExportError(f"verification failed, nothing written ({why}); --no-verify keeps such artifacts.{hint}")


__all__ = ["export", "ExportResult", "Artifact", "FORMATS", "PRECISIONS", "TlexportError"]
