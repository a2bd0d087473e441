"""int8 machinery every quantizing format shares: calibration images and batches, the gate
(`Gate`: the images, reference and measurement export's verification uses too), the recovery path
(`recover`: calibration methods, then `--int8-fallback` layers), the manifest record with how much
of the file is int8 (`ratios`), and PT2E calibration (ExecuTorch, LiteRT).

The policy means one thing for every format (docs/int8.md):
- `none`: every quantizable layer int8, with the default (or given) calibration method;
- node names: exactly those layers stay float (refused up front where a format cannot);
- `auto`: every layer int8 when the int8 gate holds against the fp32 model on the gate images,
  with the first calibration method that passes; otherwise the fewest layers, in the format's
  order of likely sensitivity, stay float until it holds (`fewest_float`), calibrated with the
  method that came closest. Where the format cannot keep a layer float, its methods are its path.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .. import progress as P
from ..errors import ExportError, UsageError
from ..verify.inputs import GATE_BATCH


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


_GATES: dict = {}  # id(run) -> (run, Gate): one image set and one reference per export


def held_out(run):
    """The images the int8 gate is measured on: `verify.inputs.gate_images`, the same set export's
    verification runs every artifact on (deterministic: loading it again gives the same images)."""
    from ..verify.inputs import gate_images

    cached = _GATES.get(id(run))
    return cached[1].inputs if cached is not None and cached[0] is run else gate_images(run)


def gate(run) -> "Gate":
    """The export's int8 gate (images and reference loaded once per run object)."""
    cached = _GATES.get(id(run))
    if cached is None or cached[0] is not run:
        _GATES.clear()  # one export at a time holds its images
        cached = _GATES[id(run)] = (run, Gate(run))
    return cached[1]


class Gate:
    """What every int8 search measures, computed as export's verification computes it: the gate
    images (`gate_images`), torch-eager's logits on them (`parity.reference_logits`), the file run
    by the runtime verification runs it with, fed GATE_BATCH images at a time (`parity.run_all`),
    and compared by `compare` with int8's gates. Search and verification therefore see the same
    images, the same reference and the same logits: they cannot disagree."""

    def __init__(self, run):
        from ..verify.inputs import gate_images
        from ..verify.parity import reference_logits

        self.inputs = gate_images(run)
        self.ref = reference_logits(run.dir, self.inputs, GATE_BATCH)
        self.classes = list(run.classes)

    def measure(self, path: Path, runtime: str):
        """The int8 comparison of the file `path` run by `runtime` (a registry runtime name)."""
        from ..runtimes import runtime_class
        from ..verify.parity import run_all

        with runtime_class(runtime)(path, "int8") as rt, P.step("held-out check"):
            return self.result(run_all(rt, self.inputs, GATE_BATCH, progress=P.hook("images")), runtime)

    def result(self, logits, runtime: str):
        """The int8 comparison of logits already computed on `inputs` (in GATE_BATCH batches)."""
        from ..verify.compare import compare, gates_for

        return compare(self.ref, logits, self.inputs, "int8", gates_for("int8"),
                       classes=self.classes, runtime=runtime)


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


def recover(trial_for, methods, policy, *, resolve=tuple, rank=None):
    """The recovery path every int8 format takes before it is given up: first every calibration
    method in `methods` with the policy's float layers (none under `auto`: every layer int8), the
    first that passes wins; under `auto`, when none passes, the fewest most sensitive layers in
    float (`fewest_float`) calibrated with the method that came closest. Each step is a trial; the
    caller records them all.

    Args:
        trial_for: method -> trial (keep -> (artifact, kept, result)).
        methods: the methods to try, the user's or the format's default first.
    Returns:
        (artifact, kept names, result, ranking [(name, score)] or [], method used).
    """
    fixed = [] if policy in ("auto", "none") else list(resolve(policy))
    counted = _Counted(None, len(methods) if policy != "auto" or rank is None else None)
    tried = []
    for m in methods:
        counted.trial = trial_for(m)
        art, kept, res = counted(fixed)
        if res.passed:
            return art, kept, res, [], m
        tried.append((closeness(res), m, (art, kept, res)))
    best = max(tried, key=lambda t: t[0])
    if policy != "auto" or rank is None:
        return (*best[2], [], best[1])
    with P.step("ranking the layers by sensitivity"):
        ranked = rank(best[2])
    counted.trial, counted.bound = trial_for(best[1]), counted.runs + max_trials(len(ranked))
    return (*fewest_float(counted, [n for n, _ in ranked]), ranked, best[1])


def closeness(res) -> tuple:
    """How near a failed trial came to its gate: fewer flips, then fewer images lost."""
    return (-len(res.flips), -(res.images_lost or 0))


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
    methods = list(dict.fromkeys(t["method"] for t in trials if t.get("method") and not t["float_nodes"]))
    layered = [t for t in trials if t["float_nodes"]]
    tried = ", ".join(str(t["float_nodes"]) for t in layered)
    names = max((t.get("float") or [] for t in trials), key=len, default=[])
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    what = f"; tried every layer int8 with {', '.join(methods)}" if methods else ""
    with_ = f" with {layered[-1]['method']}" if layered and layered[-1].get("method") else ""
    what += (f"{', then' if what else '; tried'} keeping {tried} layer(s) in float{with_} (most sensitive first: "
             f"{shown})") if names else ""
    still = f"; at that step {still_int8}" if still_int8 else ""
    even = f"even with {candidates} in float" if candidates else "with any calibration method (no layer can stay float)"
    raise ExportError(f"int8 cannot reach its gate {even} ({'; '.join(result.failures)}){what}{still}; "
                      "--no-verify keeps such an artifact")


def record(policy, kept, result, inputs, trials, *, reference: str, calibration: dict, **extra) -> dict:
    """The manifest's `int8` record: the policy, what stayed float, the agreement reached on
    which held-out images against which budget, every trial, and how it was calibrated."""
    from ..verify.compare import INT8_ALPHA, gates_for

    gates = gates_for("int8")
    n = len(inputs)
    out = {
        "fallback": policy if isinstance(policy, str) else list(policy),
        "float_nodes": list(kept),
        "top1_agreement": round(result.top1_agreement / 100, 4),
        "flips": len(result.flips), "allowed_flips": result.allowed_flips,
        "accuracy_delta": result.accuracy_delta,
        "images_lost": result.images_lost, "allowed_lost": result.allowed_lost,
        "passed": bool(result.passed),
        "images": n, "images_source": inputs.source, "labelled": inputs.labels is not None,
        "reference": reference,
        "gate": {"flip_rate": round(1 - gates.min_top1 / 100, 4), "loss_rate": gates.max_accuracy_drop / 100,
                 "confidence": 1 - INT8_ALPHA, "allowed_flips": gates.allowed_flips(n),
                 "allowed_lost": gates.allowed_loss(n) if inputs.labels is not None else None},
        "calibration": calibration,
        "trials": trials,
    }
    return {**out, **extra}


def trial_row(kept: list[str], result, method: str | None = None) -> dict:
    """One entry of the record's `trials`: the calibration method, how many and which layers it
    kept float, what it reached."""
    row = {"float_nodes": len(kept), "float": list(kept), "top1_agreement": round(result.top1_agreement / 100, 4),
           "flips": len(result.flips), "accuracy_delta": result.accuracy_delta, "passed": bool(result.passed)}
    return {"method": method, **row} if method is not None else row


def methods_to_try(job, fmt: str, support) -> list[str | None]:
    """The calibration methods `fmt`'s int8 tries, in order: the one asked for (only it), else its
    default then, under `auto`, its other methods (None stands for a PT2E quantizer's own
    histogram observer).

    Raises:
        ExportError: `fmt` cannot honour the overall --calib-method (this format's int8 alone fails).
    """
    asked = job.options.int8.calibration.check(fmt)
    if asked is not None:
        return [asked]
    default = None if support.default_method not in support.calib_methods else support.default_method
    rest = [m for m in support.calib_methods if m != default]
    auto = job.options.int8.policy(job.spec.int8_fallback) == "auto"
    return [default, *rest] if auto else [default]


# ---- how much of an int8 file is int8, and what it buys -------------------------------------------
SMALLER = 0.5  # an int8 file at most half its fp32 twin's bytes is int8 in effect
# ...or this much faster than it. Export's timing is a few seconds at batch 1 on a machine that may
# be busy: a few % is noise (16.9 vs 17.6 ms was an IR with 1 of 22 layers int8), 20 % is not.
FASTER = 1.2
def ratios(artifacts, fp32_bytes: int) -> list[str]:
    """Complete each int8 artifact's record with `size_ratio` (its bytes over the same format's
    fp32 artifact in this export, else over the model's fp32 weights) and `speedup` (the same
    format's fp32 file's export timing over its own, on the runtime both were timed on; None when
    not timed), and `int8_real`. A file that is neither 2x smaller nor 1.2x faster is published with a
    warning (one line, returned and in its notes), not dropped: the timing on the exporting
    machine is noisy and not the device's, so the exit code must not hang on it.

    Returns:
        the warning lines.
    """
    from ..tables.artifacts import MODEL

    def total(a):
        return a.size + sum(c["size"] for c in a.companions)

    fp32 = {a.format: a for a in artifacts if a.role == MODEL and a.precision == "fp32"}
    warnings = []
    for a in [a for a in artifacts if a.role == MODEL and a.precision == "int8" and a.int8 is not None]:
        twin = fp32.get(a.format)
        base = total(twin) if twin is not None else fp32_bytes
        rec = dict(a.int8)  # a copy: ORT, Triton and web share the ONNX file's record object
        rec["size_ratio"] = round(total(a) / base, 3) if base else None
        rec["size_vs"] = twin.file if twin is not None else "the model's fp32 weights"
        rec["speedup"] = speedup(a, twin)
        rec["int8_real"] = bool((rec["size_ratio"] or 1) <= SMALLER or (rec["speedup"] or 0) >= FASTER)
        if not rec["int8_real"]:
            rec["warning"] = warning(a.file, rec)
            a.notes.append(rec["warning"])
            warnings.append(rec["warning"])
        a.int8 = rec
    return warnings


def speedup(a, twin) -> float | None:
    """fp32 p50 / int8 p50 on a runtime that timed both at export (None: not timed together)."""
    if twin is None or not a.speed or not twin.speed:
        return None
    from ..formats import registry

    own = registry.get(a.format).runtimes_on("cpu")  # the format's own runtime first
    both = [r for r in [*own, *a.speed] if r in a.speed and r in twin.speed]
    if not both:
        return None
    return round(twin.speed[both[0]]["p50_ms"] / a.speed[both[0]]["p50_ms"], 2)


def warning(file: str, rec: dict) -> str:
    """One line: an int8 file that is neither 2x smaller nor faster than fp32 here, and why."""
    share = f"{rec['quantized']} of {rec['total']} layers int8" if rec.get("total") else "share unknown"
    speed = f"{rec['speedup']:.2f}x the fp32 speed here" if rec.get("speedup") is not None else "speed not timed"
    return (f"{file} is int8 in name more than in effect ({share}, {rec['size_ratio']:.2f}x the size of "
            f"{rec['size_vs']}, {speed}); published as verified, but its fp32 twin serves as well")


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


def pt2e_share(graph_module) -> dict:
    """How much of a PT2E program is int8: {"quantized": convolutions and linear layers whose
    weight is a dequantized int8 tensor, "total": all of them}."""
    total = quantized = 0
    for node in graph_module.graph.nodes:
        name = str(getattr(node.target, "__name__", node.target)).split(".")[0]
        if node.op != "call_function" or name not in ("conv1d", "conv2d", "convolution", "linear"):
            continue
        total += 1
        weight = node.args[1] if len(node.args) > 1 else None
        if weight is not None and "dequantize" in str(getattr(weight, "target", "")):
            quantized += 1
    return {"quantized": quantized, "total": total}


def method_name(method: str | None, support) -> str:
    """The name the manifest records for a method (None: the format's default)."""
    return method or support.default_method
