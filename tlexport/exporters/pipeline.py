"""`tlexport export`: run directory -> self-describing artifacts + manifest.json.

stage -> build -> describe -> verify -> publish. Each format's builder (one module per format,
found through `BUILDERS`) writes its files into a private staging folder inside the output
folder. Nothing is moved into place until every artifact has been written, checked and verified,
so a failed export leaves no partial artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ExportError, UsageError
from ..fileio import clean_stale, folder_lock
from ..tables import artifacts as table
from .job import Artifact, Job


def _builders() -> dict[str, Callable]:
    """Format name -> builder(job, say) -> (artifacts, skipped notes). Each format's module is
    imported only when that format is exported."""
    from . import executorch, onnx, openvino, ortmobile, pt2, tflite, torchscript, triton

    return {"onnx": onnx.build, "torchscript": torchscript.build, "pt2": pt2.build, "openvino": openvino.build,
            "executorch": executorch.build, "tflite": tflite.build, "ort": ortmobile.build,
            "triton": triton.build}


@dataclass
class ExportResult:
    """What `export()` wrote: the final folder, its artifacts, the manifest dict, skipped variants."""

    out_dir: Path
    artifacts: list[Artifact]
    manifest: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "artifacts": [a.to_dict() for a in self.artifacts],
                "skipped": self.skipped, "seconds": round(self.seconds, 2)}


def check_options(formats, precisions, batch, device, calib_method, calib_size, bake_preprocess):
    """Normalise and validate the user's choices before any heavy work.

    Returns:
        (formats tuple, precisions tuple, fixed batch or None)
    """
    from ..tables.extras import require
    from .quantize import CALIB_METHODS

    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    formats = tuple(dict.fromkeys(table.formats_in_all() + formats)) if "all" in formats else formats
    formats = table.check_choices(formats, tuple(table.FORMATS) + ("all",), "format")
    precisions = table.check_precisions(precisions)
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
    table.check_devices((device,))
    table.check_choices((calib_method,), CALIB_METHODS, "calibration method")
    if int(calib_size) < 1:
        raise UsageError("--calib-size must be at least 1")
    if bake_preprocess and "onnx" not in formats:
        raise UsageError("--bake-preprocess makes an ONNX model: add --format onnx")
    formats = tuple(f for f in formats if f != "all")
    require(formats)  # a missing optional extra is named before any heavy work
    return formats, precisions, fixed


def _fallback(value):
    from .quantize import parse_fallback

    return None if value is None else parse_fallback(value)


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
           bake_preprocess=False, verify=True, int8_fallback=None, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export a run's best weights to the requested formats and precisions.

    Args:
        run_dir: run directory written by `tlexport train`.
        formats: names from the artifact table (`tlexport.tables.artifacts.FORMATS`), or "all".
        precisions: fp32 / fp16 / int8 (fp16 TorchScript needs device="cuda"; int8: ONNX, OpenVINO, the edge formats).
        out: output folder (default RUN_DIR/export); tlexport's file names in it are replaced.
        opset: ONNX opset (default: newest that both the exporter and onnxruntime support).
        batch: "dynamic" (free batch dimension) or a fixed batch size.
        device: "cpu", or "cuda" for GPU-only variants (fp16 TorchScript) and GPU verification.
        calib_size, calib_method, calib_data: int8 calibration (see quantize.py).
        fp16_io: fp16 ONNX takes and returns float16 instead of float32.
        bake_preprocess: also write model.uint8.onnx (uint8 NHWC input, normalisation inside).
        int8_fallback: "auto" | "none" | node names kept in float (default: the architecture's).
        verify: compare every artifact with torch-eager and fail on a broken gate.
        progress: called with a short description as each step starts.
    Returns:
        ExportResult.
    Raises:
        UsageError, WeightsError, ExportError: one-line messages; nothing partial is left behind.
    """
    from ..models import load_run
    from ..tables import archs

    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    formats, precisions, fixed = check_options(formats, precisions, batch, device, calib_method,
                                               calib_size, bake_preprocess)
    run = load_run(run_dir)
    spec = archs.get(run.arch)
    formats, arch_skipped = _supported(spec, formats)
    _check_device(device)
    opset = _resolve_opset(formats, opset)
    say("loading weights")
    model = run.load_model("best", device="cpu")
    created = not (Path(out).expanduser() if out is not None else run.dir / "export").exists()
    out_dir = _prepare_out(run.dir, out)
    published = False
    try:
        with folder_lock(out_dir, "export"):  # a second export into this folder gets a one-line error
            clean_stale(out_dir)  # staging folders and temp files of killed exports
            result = _export_locked(run, spec, model, device, fixed, opset, out_dir, precisions, formats,
                                    arch_skipped, verify, say,
                                    dict(calib_size=int(calib_size), calib_method=calib_method,
                                         calib_data=calib_data, fp16_io=fp16_io, bake_preprocess=bake_preprocess,
                                         int8_fallback=_fallback(int8_fallback)))
            published = True
    finally:
        if created and not published:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if still empty: a failed export leaves no trace
    result.seconds = time.perf_counter() - started
    return result


def _export_locked(run, spec, model, device, fixed, opset, out_dir, precisions, formats, arch_skipped,
                   verify, say, options) -> ExportResult:
    """stage -> build -> describe -> verify -> publish, with the output folder locked."""
    staging = out_dir / f".tlexport-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        job = _make_job(run, spec, model, device, fixed, opset, staging, precisions, {**options, "verify": verify})
        made, skipped = _build_all(job, formats, say)
        result = ExportResult(out_dir, made, {}, arch_skipped + skipped)
        _describe(made, staging, run.preprocess.crop, "batch" if job.dynamic else fixed)
        verification = {"skipped": "--no-verify"}
        if verify:
            say("verifying against torch-eager")
            verification = _verify(made, staging, run, device)
        result.manifest = _manifest(result, run, job, verification)
        _publish(result, staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _supported(spec, formats) -> tuple[tuple, list[str]]:
    """Formats the architecture can be exported to; the others are named with the registry's
    reason. Asking only for impossible ones is an error."""
    keep, skipped = [], []
    for f in formats:
        reason = spec.unsupported_reason(f)
        (skipped.append(reason) if reason else keep.append(f))
    if not keep:
        raise UsageError("; ".join(skipped))
    return tuple(keep), skipped


def _build_all(job: Job, formats, say) -> tuple[list[Artifact], list[str]]:
    builders = _builders()
    made, skipped = [], []
    # Table order: formats made from ONNX (ort, triton) reuse the ONNX files already staged.
    for name in sorted(formats, key=list(table.FORMATS).index):
        for precision in job.precisions:
            reason = job.spec.unsupported_reason(name, precision)
            if reason:
                skipped.append(reason)
        keep = tuple(p for p in job.precisions if not job.spec.unsupported_reason(name, p))
        if not keep:
            continue
        artifacts, notes = builders[name](_with_precisions(job, keep), say)
        made += artifacts
        skipped += notes
    if not made:
        raise ExportError("nothing could be exported: " + "; ".join(skipped))
    _drop_intermediates(job.staging, made)
    return made, skipped


def _drop_intermediates(staging: Path, made: list[Artifact]) -> None:
    """ONNX files staged only as the source of another format are not artifacts: remove them so
    that verification (which lists the staging folder) does not run them for nothing."""
    keep = {f for a in made for f in _files_of(a)}
    for name in table.ALL_FILES:
        if name not in keep:
            with contextlib.suppress(FileNotFoundError):
                (staging / name).unlink()


def _with_precisions(job: Job, precisions: tuple) -> Job:
    import dataclasses

    return job if precisions == job.precisions else dataclasses.replace(job, precisions=precisions)


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here (use --device cpu)")


def _resolve_opset(formats, opset):
    from .onnx_graph import resolve_opset

    if any(f == "onnx" or table.FORMATS[f].from_onnx for f in formats):  # OpenVINO, ORT, Triton: from ONNX
        return resolve_opset(opset)
    return None


def _make_job(run, spec, model, device, fixed, opset, staging, precisions, options) -> Job:
    import torch

    from ..fileio import sha256
    from ..tables.metadata import build_metadata

    crop = run.preprocess.crop
    # Batch 2 for a dynamic export: torch.export specialises a dimension seen as 1.
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(fixed or 2, 3, crop, crop, generator=gen)
    meta = build_metadata(run, sha256(run.weights_file("best")), fixed)
    return Job(run, model, meta, example, fixed is None, device, opset, staging, precisions, options, spec)


def _describe(artifacts: list[Artifact], folder: Path, crop: int, batch) -> None:
    """Fill size, sha256, opset and input/output spec of each staged artifact."""
    from ..fileio import sha256
    from .onnx_graph import io_spec, opset_of

    for a in artifacts:
        path = folder / a.file
        a.size, a.sha256 = path.stat().st_size, sha256(path)
        a.companions = [{"file": c, "size": (folder / c).stat().st_size, "sha256": sha256(folder / c)}
                        for c in _files_of(a)[1:]]
        if path.suffix == ".onnx":
            a.opset = opset_of(path)
            a.inputs, a.outputs = io_spec(path)
        elif not a.inputs:  # a builder that knows its file's spec (ORT: its source ONNX) set it
            dtype = "float16" if a.precision == "fp16" else "float32"
            a.inputs = [{"name": "image", "dtype": dtype, "shape": [batch, 3, crop, crop]}]
            a.outputs = [{"name": "logits", "dtype": dtype, "shape": [batch, "classes"]}]


def _manifest(result: ExportResult, run, job: Job, verification: dict) -> dict:
    from .. import __version__
    from ..envinfo import versions

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
        "verification": verification,
        "versions": versions(("torch", "torchvision", "onnx", "onnxruntime", "openvino", "numpy")),
    }


def _files_of(a: Artifact) -> list[str]:
    """The artifact's file, then its companions: those its builder listed, else the table's."""
    listed = [c["file"] for c in a.companions]
    return [a.file, *(listed or table.companions_of(a.file))]


def _publish(result: ExportResult, staging: Path, out_dir: Path) -> None:
    """Move the staged files into place, then write manifest.json last. Older tlexport artifacts
    that this export did not produce are removed so the folder matches its manifest."""
    files = [f for a in result.artifacts for f in reversed(_files_of(a))]  # OpenVINO: weights before the graph
    with contextlib.suppress(FileNotFoundError):
        (out_dir / table.MANIFEST).unlink()
    for name in table.ALL_FILES:
        if name not in files:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
    for name in files:  # Triton's files live in sub-folders of model_repository/
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out_dir / name)
    _prune_empty(out_dir / table.TRITON_REPO)
    table.write_manifest(out_dir, result.manifest)


def _prune_empty(folder: Path) -> None:
    """Remove empty folders left under `folder` (a model dropped from the repository)."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _not_run_reason(artifact: Artifact, devices) -> str | None:
    """One line saying why no runtime here could check `artifact` (None when nothing says why)."""
    from ..runtimes import runtime_class

    fmt = table.FORMATS[artifact.format]
    for name, device in fmt.runtimes:
        if device in devices and device in artifact.devices:
            reason = runtime_class(name).unavailable_reason(device, artifact.precision)
            if reason:
                return f"not verified: {name} cannot run here ({reason})"
    return None


VERIFY_IMAGES = 128  # one flip is < 1 point of accuracy, so a single near-tie cannot fail int8


def _verify(artifacts: list[Artifact], folder: Path, run, device: str) -> dict:
    """Compare every staged artifact with torch-eager on each device it targets (of those
    available: the CPU, and CUDA with --device cuda); record per-artifact outcomes in
    `artifact.verification` and return the summary for the manifest.

    Raises:
        ExportError: a gate failed (the caller then publishes nothing).
    """
    from ..verify.parity import parity
    from .baked import verify_baked

    models = [a for a in artifacts if a.role == table.MODEL]
    devices = ("cpu", "cuda") if device == "cuda" else ("cpu",)
    runtimes = sorted({table.FORMATS[a.format].runtimes_on(d)[0] for a in models for d in devices
                       if d in a.devices and table.FORMATS[a.format].runtimes_on(d)})
    report = parity(folder, run_dir=run.dir, runtimes=runtimes, devices=devices,
                    max_images=VERIFY_IMAGES, trust_code=True)
    rows = {}
    for r in report.results:
        if r.skipped_reason is None:
            name = r.artifact and Path(r.artifact).relative_to(folder).as_posix()
            rows.setdefault((name, r.precision), []).append(r)
    for a in models:
        checked = rows.get((a.file, a.precision), [])
        if not checked:  # e.g. a CUDA-only file, or a runtime not installed here: stays unverified
            why = _not_run_reason(a, devices)
            if why:
                a.verification = {"passed": None, "reason": why}
                a.notes.append(why)
            continue
        a.verified = all(bool(r.passed) for r in checked)
        worst = max(checked, key=lambda r: (not r.passed, r.max_abs or 0.0))
        a.verification = {
            "passed": a.verified, "devices": sorted(r.device for r in checked),
            "max_abs": worst.max_abs, "mean_abs": worst.mean_abs,
            "top1_agreement": (worst.top1_agreement or 0.0) / 100, "flips": len(worst.flips),
            "reason": "; ".join(f for r in checked for f in r.failures) or None, "inputs": report.source,
        }
    baked = [a for a in artifacts if a.role != table.MODEL]
    if baked:  # uint8 NHWC input: not a parity target, checked against torch-eager directly
        verify_baked(folder, baked, run)
    summary = {k: v for k, v in report.to_dict().items() if k in ("reference", "images", "source", "tolerances", "notes")}
    summary["passed"] = all(a.verified is not False for a in artifacts)
    failed = [a for a in artifacts if a.verified is False]
    if failed:
        why = "; ".join(f"{a.file}: {a.verification['reason']}" for a in failed)
        hint = ""
        if any(a.precision == "int8" for a in failed):
            hint = (" int8 flips near-tied predictions, which an undertrained model has many of; "
                    "try --calib-method percentile or more --calib-size, or inspect with `tlexport parity`.")
        raise ExportError(f"verification failed, nothing written ({why}); --no-verify keeps such artifacts.{hint}")
    return summary
