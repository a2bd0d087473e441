"""`tlexport export`: run directory -> self-describing artifacts + manifest.json.

stage -> build -> describe -> verify -> publish, iterating the format registry. What each
format may make (its precisions, its GPU-only files) and what the architecture refuses is
decided here, in one place (`plan`); each format's builder (`<package>.build.build`) then makes
exactly the precisions it is handed, into a private staging folder inside the output folder.
Nothing is moved into place until every artifact has been written, checked and verified. One
artifact that fails (its build raises ExportError, or it misses its verification gate) does not
take the others down: those that passed are published with a complete manifest, the failed ones
are listed with their reason (`ExportResult.failed`, the manifest's `failed`) and never left half
written; when none passed, nothing is written and ExportError names every failure. Before
publishing, the verified files a runtime can run are timed against each other on this machine
(`speed`): the manifest names the fastest per runtime, and a slower int8 is said in one line.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import progress as P
from ..errors import ExportError, UsageError
from ..fileio import clean_stale, folder_lock
from ..formats import registry
from ..run.folder import check_outside, made_dirs
from ..tables import artifacts as table
from . import publish
from .job import Artifact, Job
from .options import ExportOptions, check_dynamic_size, check_int8


def builder(fmt: str) -> Callable:
    """`build(job, say) -> [Artifact]` of a format's package (imported only when it is exported)."""
    return importlib.import_module(f"{registry.get(fmt).package}.build").build


@dataclass
class ExportResult:
    """What `export()` wrote: the final folder, its artifacts, the manifest dict, skipped variants."""

    out_dir: Path
    artifacts: list[Artifact]
    manifest: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: list[dict] = field(default_factory=list)  # {"file", "format", "precision", "stage", "reason"}
    notes: list[str] = field(default_factory=list)  # one line each, e.g. an int8 file that is not faster here
    replaced: list[str] = field(default_factory=list)  # files of an earlier export made again
    removed: list[str] = field(default_factory=list)  # files of earlier exports removed (--replace)
    kept: list[str] = field(default_factory=list)  # files of earlier exports still listed in the manifest

    @property
    def passed(self) -> bool:
        """Every artifact asked for was published (the CLI exits 1 otherwise)."""
        return not self.failed

    def failure_line(self) -> str:
        """One line saying what failed and what was published ("" when everything passed)."""
        if not self.failed:
            return ""
        return (f"{len(self.failed)} artifact(s) failed, {len(self.artifacts)} published in {self.out_dir}: "
                + "; ".join(f"{f['file']}: {f['reason']}" for f in self.failed))

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "artifacts": [a.to_dict() for a in self.artifacts],
                "skipped": self.skipped, "failed": self.failed, "notes": self.notes,
                "replaced": self.replaced, "removed": self.removed, "kept": self.kept,
                "fastest": self.manifest.get("fastest", {}), "seconds": round(self.seconds, 2)}


def make_options(**keywords) -> ExportOptions:
    """The user's choices, given as `export()`'s flat keywords (batch=, calib_method=, opset=,
    ort_target=, ...), as typed options (`ExportOptions.from_keywords`; UsageError for a malformed
    value)."""
    return ExportOptions.from_keywords(**keywords)


def check_options(formats, precisions, options: ExportOptions) -> tuple[tuple, tuple]:
    """Normalise and validate the user's choices before any heavy work.

    Returns:
        (formats tuple in the user's order, "all" expanded; precisions tuple)
    Raises:
        UsageError: an unknown name, nothing to export, an option a requested format cannot
            honour, or a format whose optional extra is missing (naming its pip command).
    """
    from ..tables.extras import require

    formats, _ = expand_all(formats)
    formats = table.check_choices(formats, registry.names(), "format")
    precisions = table.check_precisions(precisions)
    if not formats or not precisions:
        raise UsageError("nothing to export: give at least one format and one precision")
    table.check_devices((options.device,))
    data = options.int8.calibration.data
    if data is not None and not data.is_dir():  # refused before the weights load, not at calibration
        raise UsageError(f"--calib-data {data} is not a folder")
    options.check(formats)  # each format's own options (`--ort-target amd64` without ort)
    check_dynamic_size(formats, options)
    check_int8(formats, precisions, options.int8)
    require(formats)  # a missing optional extra is named before any heavy work
    return formats, precisions


GROUPS = ("all", "core")


def expand_all(formats) -> tuple[tuple, list[str]]:
    """The group names of --format: `all` is every format that can be exported here (its extra
    installed, and what its builder needs on disk: onnxruntime-web's files for web); `core` is the
    formats that need no extra (onnx, torchscript, pt2). Names keep the user's order.

    Returns:
        (format names, one line per format `all` leaves out and why)
    """
    from ..tables.extras import missing

    formats = (formats,) if isinstance(formats, str) else tuple(formats or ())
    out, left_out = [], []
    for name in formats:
        if name == "core":
            out += registry.in_all()
        elif name == "all":
            for fmt in registry.names():
                why = missing(fmt) or _unavailable(fmt)
                (left_out.append(f"{fmt} (in --format all): {why}") if why else out.append(fmt))
        else:
            out.append(name)
    return tuple(dict.fromkeys(out)), left_out


def _unavailable(fmt: str) -> str | None:
    """Why a format whose packages are installed still cannot be built here (its builder's
    optional `unavailable()`, e.g. web without onnxruntime-web's files), or None."""
    check = getattr(importlib.import_module(f"{registry.get(fmt).package}.build"), "unavailable", None)
    return check() if check else None


def _refusal(fmt: str, precision: str, arch, device: str) -> str | None:
    """Why (fmt, precision) is not made in this export, or None: the one place where a format's
    precisions, its GPU-only files and the architecture's refusals are enforced."""
    spec = registry.get(fmt)
    if precision not in spec.precisions:
        why = spec.why_not(precision)
        return f"{fmt} {precision}: {fmt} is exported in {', '.join(spec.precisions)} only" + (f" ({why})" if why else "")
    reason = arch.unsupported_reason(fmt, precision)
    if reason:
        return reason
    if spec.file(precision).cuda_only and device != "cuda":
        return f"{fmt} {precision}: needs --device cuda ({precision} {fmt} is built and runs on CUDA only)"
    return None


def plan(formats, precisions, arch, device) -> tuple[list[tuple[str, tuple]], list[str]]:
    """[(format, precisions to build)] in registry order (formats built from another come after
    it and reuse its staged files), and a note for every variant not made."""
    todo, skipped = [], []
    for fmt in (f for f in registry.names() if f in formats):
        keep = []
        for p in precisions:
            reason = _refusal(fmt, p, arch, device)
            (skipped.append(reason) if reason else keep.append(p))
        if keep:
            todo.append((fmt, tuple(keep)))
    return todo, skipped


def _out_folder(run, out, calib_data) -> Path:
    """The export folder (default RUN_DIR/export), refused before anything is created when it is a
    file or lies inside an image folder this run reads (its data, --calib-data): a folder there
    would become a class folder of the data and break every later scan of it."""
    # absolute from here on: converters and subprocesses (pnnx runs in its own folder) are handed
    # paths inside it, and a path relative to the user's folder names nothing from theirs
    out = (Path(out).expanduser() if out is not None else run.dir / "export").absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    split = run.folder.read_split()
    for data, option in ((split or {}).get("root"), "--data of the run"), (calib_data, "--calib-data"):
        if data is not None:
            check_outside(out, data, "the export folder", option)
    return out


@P.reporting
def export(run_dir, formats=("onnx",), precisions=("fp32",), options: ExportOptions | None = None, *, out=None,
           progress: Callable[[str], None] | bool | None = None, **keywords) -> ExportResult:
    """Export a run's best weights to the requested formats and precisions.

    Args:
        run_dir: run directory written by `tlexport train`.
        formats: names from the format registry (`tlexport.formats.registry.FORMATS`), "all" (every
            format that can be exported here) or "core" (onnx, torchscript, pt2).
        precisions: fp32 / fp16 / int8; each format makes those its spec declares (docs/formats.md).
        options: the typed options (`exporters.options.ExportOptions`: batch, device, int8
            calibration and fallback, verify, dynamic_size, replace, and each format's own options by
            its name, e.g. `format_options={"onnx": OnnxOptions(opset=17)}`). Default: the defaults.
        out: output folder (default RUN_DIR/export). An earlier export there is added to: the
            files made again replace theirs, the others stay listed (`exporters.publish`).
        progress: True prints each stage once on stderr; a callable gets a
            `tlexport.progress.Status` (a str: "ExecuTorch int8 · calibrating 37/256 images") as each
            stage and step starts and as counted work advances (`progress.stages_only` passes on
            each stage once); None or False: silent.
        **keywords: instead of `options`, the flat keywords of `ExportOptions.from_keywords`, as
            `tlexport export`'s flags name them: batch ("dynamic" or N), device, calib_size,
            calib_method (None: each format's default, see its spec's Int8Support), calib_data,
            int8_fallback ("auto" | "none" | node names; default: the architecture's), verify,
            dynamic_size, replace (remove every tlexport file of `out` this export does not make,
            and allow an earlier export of other weights to be replaced; each removal is in
            `result.notes`), and each format's options: opset (default 18, which every
            onnxruntime since 1.14 loads), targets (`--target` releases, docs/deploy.md), fp16_io,
            bake_preprocess (ONNX), ort_target ("portable" or "amd64", formats/ort/options.py).
    Returns:
        ExportResult: `.passed` is False when some artifacts failed their build or verification;
        those that passed are published and `.failed` says which failed and why (the CLI exits 1).
        The same style as `parity()`'s report: a check that failed is a result, not an exception.
    Raises:
        ExportError: nothing could be exported (every artifact failed: nothing is written).
        UsageError, WeightsError: one-line messages; nothing partial is left behind.
        TypeError: both `options` and keywords, or an unknown keyword.
    """
    if options is None:
        options = make_options(**keywords)
    elif keywords:
        raise TypeError(f"export() takes options= or the keywords ({', '.join(keywords)}), not both")
    elif not isinstance(options, ExportOptions):
        raise TypeError(f"export()'s options must be an ExportOptions, not {type(options).__name__}")
    return _export(run_dir, formats, precisions, options, out)


def _export(run_dir, formats, precisions, options: ExportOptions, out) -> ExportResult:
    from ..models import load_run
    from ..tables import archs

    started = time.perf_counter()
    say = P.stage  # a builder's say("LiteRT int8") names the stage; its steps report inside it
    _, left_out = expand_all(formats)  # `all` names what it leaves out instead of refusing it
    formats, precisions = check_options(formats, precisions, options)
    run = load_run(Path(run_dir).expanduser().absolute())
    out_path = _out_folder(run, out, options.int8.calibration.data)
    spec = archs.get(run.arch)
    formats, arch_skipped = _supported(spec, formats)
    arch_skipped = left_out + arch_skipped
    _check_device(options.device)
    opset = _resolve_opset(formats, options.of("onnx"))
    say("loading weights")
    model = run.load_model("best", device="cpu")
    # the folder and the parents it creates are removed again when they stay empty: a failed
    # export leaves no trace
    with made_dirs(out_path) as out_dir:
        with folder_lock(out_dir, "export"):  # a second export into this folder gets a one-line error
            clean_stale(out_dir)  # staging folders and temp files of killed exports
            job = _make_job(run, spec, model, options, opset, out_dir, precisions)
            prev = publish.previous(out_dir, job.meta["weights_sha256"], options.replace)  # refused before any work
            result = _export_locked(job, formats, out_dir, arch_skipped, say, prev)
    result.seconds = time.perf_counter() - started
    return result


def _export_locked(job: Job, formats, out_dir: Path, arch_skipped, say, prev=None) -> ExportResult:
    """stage -> build -> describe -> verify -> time -> publish, with the output folder locked;
    `prev` is what earlier exports left there (kept unless made again, see `publish`)."""
    prev = prev or publish.Previous()
    staging = job.staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        todo, skipped = plan(formats, job.precisions, job.spec, job.device)
        if not todo:
            raise ExportError("nothing could be exported: " + "; ".join(arch_skipped + skipped))
        made, failed = _build_all(job, todo, say)
        result = ExportResult(out_dir, made, {}, arch_skipped + skipped, failed=failed)
        _describe(made, staging, job.run.preprocess.crop, "batch" if job.dynamic else int(job.example.shape[0]),
                  job.dynamic_size)
        if job.options.of("onnx").targets:
            from ..formats.onnx.targets import check as check_targets

            check_targets(made, staging, job.options.of("onnx").targets)
        verification = {"skipped": "--no-verify"}
        if job.options.verify and made:
            say("verifying against torch-eager")
            verification = _verify(made, staging, job.run, job.device)
            _drop_failed(result)
            verification["passed"] = True  # all that is published passed; `failed` lists the others
            if job.dynamic_size and result.artifacts:
                from .sizes import verify_sizes

                verification["sizes"] = verify_sizes(result.artifacts, staging, job.run)
        if not result.artifacts:
            raise ExportError("nothing was exported: " + _failures_line(result.failed))
        kept = publish.kept_entries(prev, result.artifacts)
        timing = _time_files(result, staging, job, say, kept, out_dir)
        _publish(result, job, prev, kept, job.options.replace, verification, timing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _failures_line(failed: list[dict]) -> str:
    return "; ".join(f"{f['file']} ({f['format']} {f['precision']}): {f['reason']}" for f in failed)


def _failure(fmt: str, precision: str, stage: str, reason: str, file: str | None = None) -> dict:
    """A manifest `failed` row: which artifact (`file`, default: the format's model file of that
    precision), at which stage (build or verification), why."""
    row = registry.get(fmt).file(precision)
    return {"file": file or (row.name if row else f"{fmt} {precision}"), "format": fmt, "precision": precision,
            "stage": stage, "reason": reason}


def _drop_failed(result: ExportResult) -> None:
    """Artifacts that missed their verification gate leave the published set (their staged files
    are removed with the staging folder) and are listed as failed with the gate's reason."""
    for a in [a for a in result.artifacts if a.verified is False]:
        result.artifacts.remove(a)
        reason = ((a.verification or {}).get("reason") or "verification failed") + "; --no-verify keeps it"
        result.failed.append(_failure(a.format, a.precision, "verification", reason + _int8_hint(a), a.file))


def _time_files(result: ExportResult, staging: Path, job: Job, say, kept=(), out_dir: Path | None = None) -> dict:
    """Time the verified files each CPU runtime can run against each other (see `speed`):
    this export's and those kept from earlier ones (already in `out_dir`), in one measurement,
    so that every `speed` of the merged manifest is comparable (the kept entries' older numbers
    are dropped). Unverified files are not timed: the fastest file must also be a correct one."""
    from . import int8, speed

    fp32_bytes = sum(t.numel() * 4 for t in job.model.state_dict().values() if t.is_floating_point())
    for entry in kept:
        entry["speed"] = None
    old = [publish.kept_artifact(e) for e in kept if e.get("verified") is True]
    if not job.options.verify and not old:
        result.notes += int8.ratios(result.artifacts, fp32_bytes)
        return {"skipped": "--no-verify"}
    say("timing the verified files on this machine")
    paths = {a.file: out_dir / a.file for a in old} if old else None
    timing = speed.compare(result.artifacts + old, staging, job.run.preprocess.crop, paths=paths)
    for entry, a in zip([e for e in kept if e.get("verified") is True], old):
        if a.speed:
            entry["speed"] = a.speed
    result.notes += timing.pop("notes", [])
    result.notes += int8.ratios(result.artifacts, fp32_bytes)  # int8 share, size and speed vs fp32
    return timing


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


def _build_all(job: Job, todo: list[tuple[str, tuple]], say) -> tuple[list[Artifact], list[dict]]:
    """Every planned (format, precision) through its builder, one precision per call, each
    checked to have made what it was asked. A call that raises ExportError fails that artifact
    only (its partial files are dropped with the intermediates); the others go on.

    Returns:
        (artifacts made, failed rows: see `_failure`)
    """
    import dataclasses

    made, failed = [], []
    for fmt, precisions in todo:
        for p in precisions:
            try:
                artifacts = builder(fmt)(dataclasses.replace(job, precisions=(p,)), say)
                _check_built(fmt, (p,), artifacts, job.staging)
            except ExportError as e:
                failed.append(_failure(fmt, p, "build", str(e) + _its_output(e)))
                continue
            made += artifacts
    _drop_intermediates(job.staging, made)
    return made, failed


def _its_output(e: ExportError) -> str:
    """The last lines a silenced converter wrote before it failed (`tlexport.quiet`): often the
    real cause, which its exception's one line does not hold."""
    from ..quiet import captured

    lines = [ln.strip() for ln in captured(e).splitlines()[-2:] if ln.strip() and ln.strip() not in str(e)]
    return f" (its output: {' / '.join(lines)})" if lines else ""


def _check_built(fmt: str, precisions: tuple, artifacts: list[Artifact], staging: Path) -> None:
    """A builder makes exactly the precisions it is handed, under its spec's file names; the
    pipeline then records the devices each targets (from the spec).

    Raises:
        ExportError: a precision the registry declares but the builder did not make (or made
            under another name): the spec and the builder disagree.
    """
    spec = registry.get(fmt)
    for a in artifacts:
        row = spec.file(a.precision, a.role)
        if a.format != fmt or row is None or a.file != row.name or not _exists(staging / a.file, spec.folder):
            raise ExportError(f"the {fmt} builder returned {a.file} ({a.format} {a.precision}), which is not "
                              f"the {spec.name} file its spec names or is not on disk")
        a.devices = ["cuda"] if row.cuda_only else list(spec.devices)
    made = {a.precision for a in artifacts if a.role == table.MODEL}
    missing = [p for p in precisions if p not in made]
    if missing:
        raise ExportError(f"the {fmt} builder made no {', '.join(missing)} artifact although the format "
                          f"registry declares {fmt} {', '.join(missing)}")


def _exists(path: Path, folder: bool) -> bool:
    return path.is_dir() if folder else path.is_file()


def _drop_intermediates(staging: Path, made: list[Artifact]) -> None:
    """Files staged only as the source of another format (the ONNX an OpenVINO-only export is
    converted from) are not artifacts: remove them so that verification (which lists the
    staging folder) does not run them for nothing."""
    keep = {f for a in made for f in _files_of(a)}
    for name in table.all_files():
        if name not in keep:
            table.remove_artifact(staging / name)


def _check_device(device: str) -> None:
    from ..errors import require_gpu

    require_gpu(device)  # the one "no GPU" policy of every command (NoGPU, exit 1)


def _resolve_opset(formats, onnx):
    """The ONNX opset when an ONNX-based format is exported (validated before any heavy work),
    the newest every --target reads when targets are given."""
    if any(f == "onnx" or registry.get(f).built_from == "onnx" for f in formats):
        from ..formats.onnx.graph import MIN_OPSET, resolve_opset
        from ..formats.onnx.targets import opset_for

        return resolve_opset(opset_for(onnx.targets, onnx.opset, MIN_OPSET))
    return None


def _make_job(run, spec, model, options: ExportOptions, opset, out_dir: Path, precisions) -> Job:
    import torch

    from ..fileio import sha256
    from ..tables.metadata import build_metadata

    crop = run.preprocess.crop
    fixed = options.batch.fixed
    # Batch 2 for a dynamic export: torch.export specialises a dimension seen as 1.
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(fixed or 2, 3, crop, crop, generator=gen)
    meta = build_metadata(run, sha256(run.weights_file("best")), fixed)
    staging = out_dir / f".tlexport-staging-{os.getpid()}"
    return Job(run, model, meta, example, staging, precisions, options, spec, opset)


def _describe(artifacts: list[Artifact], folder: Path, crop: int, batch, free_size: bool = False) -> None:
    """Fill size, sha256 (a folder's: see `tables.artifacts.artifact_sha256`), opset and
    input/output spec of each staged artifact, its companions' sizes and checksums, and the
    oldest runtime releases that load it (`formats.onnx.compat`)."""
    from ..formats.onnx.compat import oldest

    side = ("height", "width") if free_size else (crop, crop)
    for a in artifacts:
        path = folder / a.file
        a.size, a.sha256 = table.artifact_size(path), table.artifact_sha256(path)
        a.companions = [{"file": c, "size": table.artifact_size(folder / c), "sha256": table.artifact_sha256(folder / c)}
                        for c in _files_of(a)[1:]]
        if path.suffix == ".onnx" and path.is_file():
            from ..formats.onnx.graph import io_spec, opset_of

            a.opset = opset_of(path)
            a.inputs, a.outputs = io_spec(path)
        elif not a.inputs:  # a builder that knows its file's spec (ORT: its source ONNX) set it
            dtype = "float16" if a.precision == "fp16" else "float32"
            a.inputs = [{"name": "image", "dtype": dtype, "shape": [batch, 3, *side]}]
            a.outputs = [{"name": "logits", "dtype": dtype, "shape": [batch, "classes"]}]
        if path.suffix in (".onnx", ".ort", ".tflite") and path.is_file():
            a.compat = oldest(path)


def _files_of(a: Artifact) -> list[str]:
    return publish.files_of(a)


def _publish(result: ExportResult, job: Job, prev, kept: list[dict], replace: bool, verification: dict,
             timing: dict) -> None:
    """Merge with what earlier exports left (`publish`), say what changes, then move the staged
    files into place and write manifest.json last."""
    staging, out_dir = job.staging, result.out_dir
    result.replaced, remove, notes = publish.plan_changes(prev, result.artifacts, result.failed, out_dir,
                                                          replace, kept)
    result.removed = remove if replace else []
    result.kept = [e["file"] for e in kept]
    result.notes = notes + result.notes
    result.manifest = publish.manifest(result, job.run, job, verification, timing, kept, prev)
    files = [f for a in result.artifacts for f in reversed(_files_of(a))]  # OpenVINO: weights before the graph
    publish.publish(files, remove, staging, out_dir, result.manifest)


def _not_run_reason(artifact: Artifact, devices) -> str | None:
    """One line saying why no runtime here could check `artifact` (None when nothing says why)."""
    from ..runtimes import runtime_class

    for name, device in registry.get(artifact.format).runtimes:
        if device in devices and device in artifact.devices:
            reason = runtime_class(name).unavailable_reason(device, artifact.precision)
            if reason:
                return f"not verified: {name} cannot run here ({reason})"
    return None




def _verify(artifacts: list[Artifact], folder: Path, run, device: str) -> dict:
    """Compare every staged artifact with torch-eager on each device it targets (of those
    available: the CPU, and CUDA with --device cuda); record per-artifact outcomes in
    `artifact.verified` / `artifact.verification` (False: a gate failed; the caller drops it)
    and return the summary for the manifest."""
    from ..formats.onnx.baked import verify_baked
    from ..verify.inputs import GATE_BATCH
    from ..verify.parity import parity
    from . import int8

    models = [a for a in artifacts if a.role == table.MODEL]
    devices = ("cpu", "cuda") if device == "cuda" else ("cpu",)
    runtimes = sorted({registry.get(a.format).runtimes_on(d)[0] for a in models for d in devices
                       if d in a.devices and registry.get(a.format).runtimes_on(d)})
    # The images, reference and batches every int8 search was gated on (`exporters.int8.Gate`):
    # search and verification measure the same numbers, so they cannot disagree.
    report = parity(folder, run_dir=run.dir, runtimes=runtimes, devices=devices, inputs=int8.held_out(run),
                    batch_size=GATE_BATCH, trust_code=True, progress=P.hook("images"))
    rows = {}
    for r in report.results:
        if r.skipped_reason is None:
            name = r.artifact and Path(r.artifact).relative_to(folder).as_posix()
            rows.setdefault((name, r.precision), []).append(r)
    for a in models:
        _record_verification(a, rows.get((a.file, a.precision), []), devices, report.source)
    baked = [a for a in artifacts if a.role != table.MODEL]
    if baked:  # a decoded uint8 image in: not a parity target, checked against tlexport's pipeline
        verify_baked(folder, baked, run)
    summary = {k: v for k, v in report.to_dict().items() if k in ("reference", "images", "source", "tolerances", "notes")}
    return summary


def _int8_hint(a: Artifact) -> str:
    """What usually helps an int8 file that missed its gate (nothing for other precisions): the
    methods it did not try, per format so that the other formats keep theirs."""
    if a.precision != "int8":
        return ""
    tried = set(((a.int8 or {}).get("calibration") or {}).get("tried") or [])
    support = registry.get(a.format).int8
    fmt = "onnx" if registry.get(a.format).built_from == "onnx" and a.format != "openvino" else a.format
    left = [m for m in (support.calib_methods if support else ()) if m not in tried]
    methods = f"--calib-method {fmt}={left[0]} or " if left else ""
    return (f"; int8 flips near-tied predictions, which an undertrained model has many of: try {methods}"
            "more --calib-size, or inspect with `tlexport parity`")


def _record_verification(a: Artifact, checked: list, devices, source: str) -> None:
    """`a.verified` and `a.verification` from its parity rows (one per device it ran on)."""
    if not checked:  # e.g. a CUDA-only file, or a runtime not installed here: stays unverified
        why = _not_run_reason(a, devices)
        if why:
            a.verification = {"passed": None, "reason": why}
            a.notes.append(why)
        return
    a.verified = all(bool(r.passed) for r in checked)
    worst = max(checked, key=lambda r: (not r.passed, r.max_abs or 0.0))
    a.verification = {
        "passed": a.verified, "devices": sorted(r.device for r in checked),
        "max_abs": worst.max_abs, "mean_abs": worst.mean_abs,
        "top1_agreement": (worst.top1_agreement or 0.0) / 100, "flips": len(worst.flips),
        "reason": "; ".join(f for r in checked for f in r.failures) or None, "inputs": source,
    }
