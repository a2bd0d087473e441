"""`tlexport export`: run directory -> self-describing artifacts + manifest.json.

The orchestration: stage -> build -> describe -> check -> verify -> time -> publish, iterating the
format registry; verification's book-keeping is `exporters.verification`, describing and
publishing `exporters.publish`, and a format's own steps are its hooks (`exporters.hooks`: ONNX's
opset, file description, --target checks and baked-model verification), so nothing here names a
format.

What each format may make (its precisions, its GPU-only files) and what the architecture refuses
is decided here, in one place (`plan`); each format's builder (`<package>.build.build`) is then
called once per precision and makes exactly that one, into a private staging folder inside the
output folder.
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
from . import hooks, publish
from . import verification as verifying
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
    from ..keywords import options_or_keywords

    options = options_or_keywords(make_options, options, keywords, "export")
    if not isinstance(options, ExportOptions):
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
    settings = hooks.prepare(formats, options)  # e.g. ONNX's opset, checked before any heavy work
    say("loading weights")
    model = run.load_model("best", device="cpu")
    # the folder and the parents it creates are removed again when they stay empty: a failed
    # export leaves no trace
    with made_dirs(out_path) as out_dir:
        with folder_lock(out_dir, "export"):  # a second export into this folder gets a one-line error
            clean_stale(out_dir)  # staging folders and temp files of killed exports
            job = _make_job(run, spec, model, options, settings, out_dir, precisions)
            prev = publish.previous(out_dir, job.meta["weights_sha256"], options.replace)  # refused before any work
            result = _export_locked(job, formats, out_dir, arch_skipped, say, prev)
    result.seconds = time.perf_counter() - started
    return result


def _export_locked(job: Job, formats, out_dir: Path, arch_skipped, say, prev=None) -> ExportResult:
    """stage -> build -> describe -> check -> verify -> time -> publish, with the output folder locked;
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
        publish.describe(made, staging, job.run.preprocess.crop,
                         "batch" if job.dynamic else int(job.example.shape[0]), job.dynamic_size)
        hooks.check(made, staging, job)  # e.g. ONNX's --target checks
        verification = {"skipped": "--no-verify"}
        if job.options.verify and made:
            say("verifying against torch-eager")
            verification = verifying.verify(made, staging, job.run, job.device)
            verifying.drop_failed(result.artifacts, result.failed)
            verification["passed"] = True  # all that is published passed; `failed` lists the others
            if job.dynamic_size and result.artifacts:
                from .sizes import verify_sizes

                verification["sizes"] = verify_sizes(result.artifacts, staging, job.run)
        if not result.artifacts:
            raise ExportError("nothing was exported: " + _failures_line(result.failed))
        kept = publish.kept_entries(prev, result.artifacts)
        timing = _time_files(result, staging, job, say, kept, out_dir)
        publish.publish_export(result, job, prev, kept, verification, timing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _failures_line(failed: list[dict]) -> str:
    return "; ".join(f"{f['file']} ({f['format']} {f['precision']}): {f['reason']}" for f in failed)


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
                failed.append(verifying.failure(fmt, p, "build", str(e) + _its_output(e)))
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
    keep = {f for a in made for f in publish.files_of(a)}
    for name in table.all_files():
        if name not in keep:
            table.remove_artifact(staging / name)


def _check_device(device: str) -> None:
    from ..errors import require_gpu

    require_gpu(device)  # the one "no GPU" policy of every command (NoGPU, exit 1)


def _make_job(run, spec, model, options: ExportOptions, settings: dict, out_dir: Path, precisions) -> Job:
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
    return Job(run, model, meta, example, staging, precisions, options, spec, settings)
