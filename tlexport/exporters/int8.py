"""int8 machinery every quantizing format shares: calibration images and batches, the held-out
images the int8 gate is measured on, the `--int8-fallback` policy and its gated search, the
manifest record, and PT2E calibration (ExecuTorch, LiteRT).

The policy means one thing for every format (docs/formats.md, "int8"):
- `none`: every quantizable layer int8;
- node names: exactly those layers stay float (refused up front where a format cannot);
- `auto`: every layer int8 when parity's int8 gate (top-1 agreement, accuracy drop) holds
  against the fp32 model on the held-out images; otherwise the fewest layers, in the format's
  order of likely sensitivity, stay float until it holds (`fewest_float`). Where the format
  cannot keep a layer float, `auto` is every layer int8 and export's verification gates it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .. import progress as P
from ..errors import ExportError, UsageError

HELDOUT_IMAGES = 256  # held-out images the int8 gate is measured on (the run's val split)
RANDOM_HELDOUT = 64  # seeded random inputs when the run has no val split on disk


def calibration_images(run, calib_data: Path | str | None, calib_size: int) -> list[Path]:
    """Up to `calib_size` image files: from `calib_data` (a folder) or the run's train split.

    A fixed seed picks the subset so exports are reproducible.

    Raises:
        ExportError: no images to calibrate with.
    """
    from ..data.images import iter_image_files

    if calib_data is not None:
        folder = Path(calib_data)
        if not folder.is_dir():
            raise UsageError(f"--calib-data {folder} is not a folder")
        files = iter_image_files([folder])
        where = str(folder)
    else:
        files = [p for p, _ in run.samples("train")]
        where = f"the training split recorded in {run.dir / 'split.json'}"
    if not files:
        raise ExportError(f"int8 needs calibration images but none were found in {where}; "
                          "pass --calib-data DIR")
    if len(files) > calib_size:
        files = sorted(random.Random(0).sample(files, calib_size))
    return files


def calibration_batches(files: list[Path], preprocess, batch: int, *, pad: bool = False) -> list[np.ndarray]:
    """Preprocess exactly as at inference (`Preprocess.to_array`) into float32 NCHW batches of
    `batch` images. The last batch is shorter unless `pad` (a fixed-batch graph takes exactly
    `batch` images; it is then filled by repeating its last image)."""
    from ..data.images import BadImage

    arrays = []
    for f in P.counted(files, "reading calibration images", len(files), "images"):
        try:
            arrays.append(preprocess.to_array(preprocess.load(f)))
        except BadImage:
            continue  # a broken training image must not stop the export
    if not arrays:
        raise ExportError("int8 needs calibration images but none of them could be read")
    out = []
    for i in range(0, len(arrays), batch):
        chunk = arrays[i : i + batch]
        if pad:
            chunk += [chunk[-1]] * (batch - len(chunk))
        out.append(np.stack(chunk).astype(np.float32))
    return out


def calibration(job, batch: int, *, pad: bool = False) -> tuple[list[Path], list[np.ndarray], str]:
    """(files, batches, where they came from) for `job`'s int8 options."""
    c = job.options.int8.calibration
    files = calibration_images(job.run, c.data, c.size)
    return files, calibration_batches(files, job.run.preprocess, batch, pad=pad), \
        str(c.data) if c.data else "run train split"


def held_out(run):
    """The images the int8 gate is measured on: the run's val split (never the calibration
    images, which come from the train split), else seeded random inputs (no labels)."""
    from ..verify.inputs import load_images, random_inputs

    samples = run.samples("val")
    if samples:
        return load_images(samples, run.preprocess, None, "the run's val split", HELDOUT_IMAGES)
    return random_inputs(RANDOM_HELDOUT, run.preprocess.crop, note=", the run's val split is not on disk")


def fewest_float(trial, ranked: list[str]):
    """The shortest prefix of `ranked` (most sensitive first) kept in float with which the gate
    passes: prefixes of 1, 2, 4, ... until one passes, then bisection down to the fewest. Each
    step is one quantization, so n candidate layers cost about 2 log2(n) of them.

    Args:
        trial: keep (list of names) -> (artifact, kept names, result with `.passed`).
    Returns:
        the passing trial, or the one keeping every ranked layer when none passes.
    """
    lo, k, best = 0, 1, None
    while best is None:
        k = min(k, len(ranked))
        t = trial(ranked[:k])
        if t[2].passed or k == len(ranked):
            best, hi = t, k
        else:
            lo, k = k, k * 2
    if not best[2].passed:
        return best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = trial(ranked[:mid])
        if t[2].passed:
            best, hi = t, mid
        else:
            lo = mid
    return best


def search(trial, policy, *, resolve=tuple, rank=None):
    """Run the `--int8-fallback` policy through `trial` (see `fewest_float`).

    Args:
        policy: "none" | "auto" | node names.
        resolve: names (aliases included) -> the format's own layer names.
        rank: the all-int8 trial -> candidate layers, most sensitive first (`auto` only).
    Returns:
        (artifact, kept names, result, ranking as [(name, score)] or []).
    """
    trial = _Counted(trial, 1 if policy != "auto" else None)
    if policy == "none":
        return (*trial([]), [])
    if policy != "auto":
        return (*trial(list(resolve(policy))), [])
    first = trial([])
    if first[2].passed or rank is None:
        return (*first, [])
    with P.step("ranking the layers by sensitivity"):
        ranked = rank(first)
    trial.bound = 1 + max_trials(len(ranked))
    return (*fewest_float(trial, [n for n, _ in ranked]), ranked)


def max_trials(n: int) -> int:
    """The most trials `fewest_float` runs on `n` ranked layers: doubling up to n, then bisecting
    the last doubling step."""
    doubling = max(n - 1, 0).bit_length()  # ceil(log2 n)
    return max(doubling + 1, 2 * doubling)


class _Counted:
    """A search trial shown as a progress step, "trial 2/≤5 (1 layer float)", so the minutes each
    quantization and held-out check take are seen to advance."""

    def __init__(self, trial, bound: int | None):
        self.trial, self.bound, self.runs = trial, bound, 0

    def __call__(self, keep):
        self.runs += 1
        of = "" if self.bound is None else f"/≤{self.bound}" if self.bound > 1 else "/1"
        floats = f"{len(keep)} layer(s) float" if keep else "all int8"
        with P.step(f"trial {self.runs}{of} ({floats})"):
            return self.trial(keep)


def check_reached(policy, result, verify: bool, candidates: str, *, trials=(), still_int8: str = "") -> None:
    """`auto` failing its gate with every candidate float is an error (unless --no-verify) that
    says what was tried: how many layers each trial kept float, the most sensitive of them, and
    (`still_int8`) what the format still quantizes when every candidate is float.

    Args:
        candidates: the layers the last trial kept float, in words ("all 21 Conv/Gemm/MatMul layers").
        trials: the record's trial rows (`trial_row`), in the order they ran.
    """
    if policy != "auto" or result.passed or not verify:
        return
    tried = ", ".join(str(t["float_nodes"]) for t in trials)
    names = max((t.get("float") or [] for t in trials), key=len, default=[])
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    what = f"; tried keeping {tried} layer(s) in float (most sensitive first: {shown})" if names else ""
    still = f"; at that step {still_int8}" if still_int8 else ""
    raise ExportError(f"int8 cannot reach its gate even with {candidates} in float "
                      f"({'; '.join(result.failures)}){what}{still}; --no-verify keeps such an artifact")


def record(policy, kept, result, inputs, trials, *, reference: str, calibration: dict, **extra) -> dict:
    """The manifest's `int8` record: the policy, what stayed float, the agreement reached on
    which held-out images, every trial, and how it was calibrated."""
    from ..verify.compare import gates_for

    gates = gates_for("int8")
    out = {
        "fallback": policy if isinstance(policy, str) else list(policy),
        "float_nodes": list(kept),
        "top1_agreement": round(result.top1_agreement / 100, 4),
        "accuracy_delta": result.accuracy_delta,
        "passed": bool(result.passed),
        "images": len(inputs), "images_source": inputs.source, "labelled": inputs.labels is not None,
        "reference": reference,
        "gate": {"min_top1": gates.min_top1, "max_accuracy_drop": gates.max_accuracy_drop},
        "calibration": calibration,
        "trials": trials,
    }
    return {**out, **extra}


def trial_row(kept: list[str], result) -> dict:
    """One entry of the record's `trials`: how many and which layers it kept float, what it reached."""
    return {"float_nodes": len(kept), "float": list(kept), "top1_agreement": round(result.top1_agreement / 100, 4),
            "accuracy_delta": result.accuracy_delta, "passed": bool(result.passed)}


# ---- PT2E (torch.export-based quantization: ExecuTorch, LiteRT) ------------------------------------
def pt2e_config(config, method: str | None):
    """A PT2E QuantizationConfig calibrated by `method`: None keeps the quantizer's own activation
    observer (a histogram), "minmax" observes activations' min and max."""
    import dataclasses

    if method is None:
        return config
    if method != "minmax":
        raise UsageError(f"--calib-method {method}: PT2E quantizers calibrate with minmax or their default only")
    from torchao.quantization.pt2e.observer import MinMaxObserver

    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def pt2e_calibrate(module, quantizer, batches, *, fold_quantize: bool = True):
    """prepare_pt2e, run the calibration batches, convert_pt2e (the quantized GraphModule)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for b in P.counted(batches, "calibrating", sum(len(b) for b in batches), "images", size=len):
            prepared(torch.from_numpy(b))
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def pt2e_method(job, support) -> tuple[str | None, str]:
    """(the --calib-method given or None, the name recorded in the manifest)."""
    method = job.options.int8.calibration.method
    return method, method or support.default_method
