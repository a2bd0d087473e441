"""Export's verification book-keeping: every staged artifact compared with torch-eager (through
`tlexport.verify.parity`, on the images and gates the int8 search used), each one's outcome
recorded on it, the artifacts parity does not run verified by their format's hook
(`exporters.hooks.verify`), and the failed ones taken out of the published set with their reason
and what usually helps."""

from __future__ import annotations

from pathlib import Path

from .. import progress as P
from ..formats import registry
from ..formats.spec import MODEL
from .job import Artifact


def verify(artifacts: list[Artifact], folder: Path, run, device: str) -> dict:
    """Compare every staged artifact with torch-eager on each device it targets (of those
    available: the CPU, and CUDA with --device cuda); record per-artifact outcomes in
    `artifact.verified` / `artifact.verification` (False: a gate failed; the caller drops it)
    and return the summary for the manifest."""
    from ..verify import parity as parity_module
    from ..verify.inputs import GATE_BATCH
    from . import hooks, int8

    models = [a for a in artifacts if a.role == MODEL]
    devices = ("cpu", "cuda") if device == "cuda" else ("cpu",)
    runtimes = sorted({registry.get(a.format).runtimes_on(d)[0] for a in models for d in devices
                       if d in a.devices and registry.get(a.format).runtimes_on(d)})
    # The images, reference and batches every int8 search was gated on (`exporters.int8.Gate`):
    # search and verification measure the same numbers, so they cannot disagree.
    report = parity_module.parity(folder, run_dir=run.dir, runtimes=runtimes, devices=devices,
                                  inputs=int8.held_out(run), batch_size=GATE_BATCH, trust_code=True,
                                  progress=P.hook("images"))
    rows = {}
    for r in report.results:
        if r.skipped_reason is None:
            name = r.artifact and Path(r.artifact).relative_to(folder).as_posix()
            rows.setdefault((name, r.precision), []).append(r)
    for a in models:
        record(a, rows.get((a.file, a.precision), []), devices, report.source)
    others = [a for a in artifacts if a.role != MODEL]
    if others:  # e.g. a decoded uint8 image in: not a parity target, checked by its format
        hooks.verify(others, folder, run)
    return {k: v for k, v in report.to_dict().items() if k in ("reference", "images", "source", "tolerances", "notes")}


def record(a: Artifact, checked: list, devices, source: str) -> None:
    """`a.verified` and `a.verification` from its parity rows (one per device it ran on)."""
    if not checked:  # e.g. a CUDA-only file, or a runtime not installed here: stays unverified
        why = not_run_reason(a, devices)
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


def not_run_reason(artifact: Artifact, devices) -> str | None:
    """One line saying why no runtime here could check `artifact` (None when nothing says why)."""
    from ..runtimes import runtime_class

    for name, device in registry.get(artifact.format).runtimes:
        if device in devices and device in artifact.devices:
            reason = runtime_class(name).unavailable_reason(device, artifact.precision)
            if reason:
                return f"not verified: {name} cannot run here ({reason})"
    return None


def failure(fmt: str, precision: str, stage: str, reason: str, file: str | None = None) -> dict:
    """A manifest `failed` row: which artifact (`file`, default: the format's model file of that
    precision), at which stage (build or verification), why."""
    row = registry.get(fmt).file(precision)
    return {"file": file or (row.name if row else f"{fmt} {precision}"), "format": fmt, "precision": precision,
            "stage": stage, "reason": reason}


def drop_failed(artifacts: list[Artifact], failed: list[dict]) -> None:
    """Artifacts that missed their verification gate leave `artifacts` (the published set; their
    staged files are removed with the staging folder) and are added to `failed` with the gate's
    reason."""
    for a in [a for a in artifacts if a.verified is False]:
        artifacts.remove(a)
        reason = ((a.verification or {}).get("reason") or "verification failed") + "; --no-verify keeps it"
        failed.append(failure(a.format, a.precision, "verification", reason + int8_hint(a), a.file))


def int8_hint(a: Artifact) -> str:
    """What usually helps an int8 file that missed its gate (nothing for other precisions): the
    methods it did not try, named for the format whose int8 file it is (ORT's is ONNX's)."""
    if a.precision != "int8":
        return ""
    tried = set(((a.int8 or {}).get("calibration") or {}).get("tried") or [])
    support = registry.get(a.format).int8
    fmt = registry.int8_source(a.format)
    left = [m for m in (support.calib_methods if support else ()) if m not in tried]
    methods = f"--calib-method {fmt}={left[0]} or " if left else ""
    return (f"; int8 flips near-tied predictions, which an undertrained model has many of: try {methods}"
            "more --calib-size, or inspect with `tlexport parity`")
