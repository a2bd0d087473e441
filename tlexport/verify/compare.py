"""The pure comparison (numpy only): gates by precision, per-image metrics of one runtime against
the reference, and the check of embedded metadata against the run's.

Gates by precision (see `gates_for`):
- fp32: every logit within `atol + rtol * |ref|` (as `np.allclose`) and 100 % top-1 agreement;
- fp16: all logits finite and top-1 agreement >= 99 %; errors are reported against 1e-2 / 1e-2;
- int8: a statistical gate (see `flip_budget`): the images that flip top-1 must be no more than a
  model whose true flip rate is 2 % shows in 95 % of samples of this size, and, when labels are
  known, the net images lost to errors no more than a true 1-point accuracy loss would show.
  docs/int8.md states what this guarantees for a given image count.
Every precision also needs the right output shape and dtype, batch independence within its
tolerance, and metadata (classes, preprocessing) equal to the run's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import UsageError
from ..render import json_safe

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
TOP_K = 5
MAX_FLIPS_IN_MESSAGE = 3


# ---- gates -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gates:
    """What one precision must satisfy.

    Args:
        atol, rtol: elementwise tolerance on logits (`|out - ref| <= atol + rtol * |ref|`).
        require_allclose: whether the tolerance is a gate (fp32) or only reported (fp16, int8).
        min_top1: minimum top-1 agreement with the reference, in percent.
        max_accuracy_drop: maximum accuracy loss in points when labels are known (None: no gate).
        batch_atol, batch_rtol: tolerance between an image run alone and inside a batch.
    """

    atol: float
    rtol: float
    require_allclose: bool
    min_top1: float
    max_accuracy_drop: float | None = None
    batch_atol: float = DEFAULT_ATOL
    batch_rtol: float = DEFAULT_RTOL
    alpha: float | None = None  # set: min_top1 / max_accuracy_drop are true rates, tested at this level

    def allowed_flips(self, n: int) -> int:
        """How many of `n` images may flip top-1 (see `flip_budget`; a plain share without `alpha`)."""
        if self.alpha is None:
            return math.floor(n * (100.0 - self.min_top1) / 100.0 + 1e-9)
        return flip_budget(n, (100.0 - self.min_top1) / 100.0, self.alpha)

    def allowed_loss(self, n: int) -> int | None:
        """How many images of `n` the runtime may get wrong net of those it gets newly right."""
        if self.max_accuracy_drop is None:
            return None
        if self.alpha is None:
            return math.floor(n * self.max_accuracy_drop / 100.0 + 1e-9)
        return flip_budget(n, self.max_accuracy_drop / 100.0, self.alpha)


INT8_ALPHA = 0.05  # the chance that an int8 model which truly meets its rates fails the gate


def flip_budget(n: int, rate: float, alpha: float) -> int:
    """The most events (flipped images) of `n` that do not show a true rate above `rate`: the
    smallest k with P(Binomial(n, rate) <= k) >= 1 - alpha. A model whose true rate is `rate` or
    less exceeds it with probability at most `alpha` (one-sided binomial test); a negative rate
    (an impossible gate) allows no result at all (-1).

    Why a test and not a share: the share of n images moves by 1/n per image, so "98 % of 50
    images" fails on one near-tied image; 2 % of n images is what a 2 % model shows on average,
    and half the samples of such a model show more.
    """
    if rate < 0:
        return -1
    if rate >= 1:
        return n
    if rate == 0:
        return 0
    cdf, k = 0.0, 0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    while k <= n:
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
        if cdf >= 1 - alpha - 1e-12:
            return k
        k += 1
    return n


def gates_for(precision: str, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Gates:
    """The gates of `precision` ("fp32" | "fp16" | "int8"), with the user's fp32 tolerance.

    Returns:
        Gates. fp16 and int8 report errors against looser tolerances (never tighter than the
        user's), because half precision and quantisation change logits by design.
    """
    if precision == "fp32":
        return Gates(atol, rtol, True, 100.0, None, atol, rtol)
    if precision == "fp16":
        loose_a, loose_r = max(atol, 1e-2), max(rtol, 1e-2)
        return Gates(loose_a, loose_r, False, 99.0, None, loose_a, loose_r)
    if precision == "int8":
        # Static QDQ scales are fixed, so batch independence holds up to one quantisation step
        # where an accumulation lands on a rounding boundary; 5e-2 allows that, not real bugs.
        loose_a, loose_r = max(atol, 1e-1), max(rtol, 1e-1)
        return Gates(loose_a, loose_r, False, 98.0, 1.0, 5e-2, 5e-2, alpha=INT8_ALPHA)
    raise UsageError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")


# ---- results -----------------------------------------------------------------------------------
@dataclass
class RuntimeResult:
    """How one runtime x precision x device compares with the reference.

    Metrics are None when the runtime was skipped or its output could not be compared.
    `accuracy` and `accuracy_delta` are in percent / points; `top5_overlap` is in [0, 1].
    """

    runtime: str
    precision: str
    device: str
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine_min: float | None = None
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    accuracy: float | None = None
    accuracy_delta: float | None = None
    flips: list[dict] = field(default_factory=list)
    allowed_flips: int | None = None  # the gate's budget for these images (None: no flips gate ran)
    images_lost: int | None = None  # net images the runtime gets wrong that the reference gets right
    allowed_lost: int | None = None
    passed: bool | None = None
    skipped_reason: str | None = None
    failures: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    dtype: str | None = None
    finite: bool | None = None
    within_tolerance: bool | None = None
    atol: float | None = None
    rtol: float | None = None
    batch_independent: bool | None = None
    metadata_ok: bool | None = None
    artifact: str | None = None
    seconds: float | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}/{self.device}"

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self.passed = False

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


# ---- the pure comparison -----------------------------------------------------------------------
@dataclass(frozen=True)
class Images:
    """What `compare` needs to know of the images (`verify.inputs.Inputs` has the same two)."""

    names: list
    labels: object = None


def compare(reference_logits, logits, images, precision, gates: Gates, *, classes=None,
            runtime: str = "", device: str = "cpu") -> RuntimeResult:
    """Compare one runtime's logits with the reference's on the same images (pure numpy).

    Args:
        reference_logits: [N, K] float array from the reference runtime.
        logits: [N, K] array from the runtime under test (shape/dtype are checked here).
        images: `.names` (N image names, to list the images whose top-1 flips) and `.labels`
            ([N] true class indices, -1 = unknown, or None when no label is known): an `Inputs`
            or an `Images`.
        precision: "fp32" | "fp16" | "int8" (recorded; the gates come in `gates`).
        gates: the Gates of that precision (`gates_for`).
        classes: class names for the flip list (indices are used when None).
    Returns:
        RuntimeResult with metrics filled in, `passed` and human-readable `failures`.
    """
    labels, names = images.labels, images.names
    res = RuntimeResult(runtime, precision, device, atol=gates.atol, rtol=gates.rtol, passed=True)
    ref, out = np.asarray(reference_logits), np.asarray(logits)
    res.shape, res.dtype = list(out.shape), str(out.dtype)
    if out.ndim != 2 or out.shape != ref.shape:
        res.fail(f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
        return res
    if out.dtype != np.float32:
        res.fail(f"output dtype {out.dtype}, expected float32")
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    res.finite = bool(np.isfinite(out64).all())
    if not res.finite:
        bad_rows = int((~np.isfinite(out64)).any(axis=1).sum())
        res.fail(f"non-finite logits (NaN/Inf) for {bad_rows} of {len(out)} images")
    _error_metrics(res, ref64, out64, gates)
    _agreement_metrics(res, ref64, out64, names, classes, gates)
    _accuracy_metrics(res, ref64, out64, labels, gates)
    return res


def _error_metrics(res: RuntimeResult, ref: np.ndarray, out: np.ndarray, gates: Gates) -> None:
    """max/mean abs error, max relative error, min cosine, and the elementwise tolerance gate.

    max_rel is each image's largest error divided by its largest |reference logit| (elementwise
    ratios explode on logits near zero and say nothing about the prediction)."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(out - ref)
        res.max_abs = float(np.max(diff)) if res.finite else math.inf
        res.mean_abs = float(np.mean(diff)) if res.finite else math.inf
        scale = np.maximum(np.max(np.abs(ref), axis=1), 1e-12)
        res.max_rel = float(np.max(np.max(diff, axis=1) / scale)) if res.finite else math.inf
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cos = np.sum(ref * out, axis=1) / np.maximum(norms, 1e-12)
        res.cosine_min = float(np.min(cos)) if res.finite else math.nan
        ok = diff <= gates.atol + gates.rtol * np.abs(ref)  # NaN compares False: outside
    res.within_tolerance = bool(ok.all())
    if gates.require_allclose and not res.within_tolerance:
        res.fail(f"{int((~ok).sum())} of {ok.size} logits outside atol={gates.atol:g} "
                 f"rtol={gates.rtol:g} (max abs error {res.max_abs:.3g})")


def _agreement_metrics(res, ref, out, names, classes, gates: Gates) -> None:
    """top-1 agreement (%), mean top-5 overlap (None with 5 classes or fewer: any top-5 holds
    every class, so it would always read 1.0) and the flipped images."""
    n, k = ref.shape
    ref_top1, out_top1 = ref.argmax(axis=1), out.argmax(axis=1)
    res.top1_agreement = 100.0 * float(np.mean(ref_top1 == out_top1))
    if k > TOP_K:
        ref_top, out_top = np.argsort(-ref, axis=1)[:, :TOP_K], np.argsort(-out, axis=1)[:, :TOP_K]
        overlap = [len(set(a) & set(b)) / TOP_K for a, b in zip(ref_top.tolist(), out_top.tolist())]
        res.top5_overlap = float(np.mean(overlap))
    name_of = (lambda i: classes[i]) if classes else (lambda i: int(i))  # noqa: E731
    for i in np.flatnonzero(ref_top1 != out_top1):
        res.flips.append({
            "image": str(names[i]), "reference": name_of(int(ref_top1[i])),
            "runtime": name_of(int(out_top1[i])),
            # How close the reference was to a tie: small margins flip on rounding alone.
            "reference_margin": float(_margin(ref[i])),
        })
    res.allowed_flips = gates.allowed_flips(n)
    if len(res.flips) > res.allowed_flips:
        shown = ", ".join(f["image"] for f in res.flips[:MAX_FLIPS_IN_MESSAGE])
        more = "..." if len(res.flips) > MAX_FLIPS_IN_MESSAGE else ""
        res.fail(f"top-1 agreement {res.top1_agreement:.2f}% < {_allowed_share(gates, n)} "
                 f"({len(res.flips)} of {n} images flip, {max(res.allowed_flips, 0)} allowed: {shown}{more})")


def _allowed_share(gates: Gates, n: int) -> str:
    """The agreement the gate asks of `n` images, in words."""
    if gates.alpha is None:
        return f"{gates.min_top1:g}%"
    least = 100.0 * (n - max(gates.allowed_flips(n), 0)) / n
    return f"{least:.2f}% (a {100 - gates.min_top1:g}% flip rate at {1 - gates.alpha:.0%} confidence)"


def _margin(row: np.ndarray) -> float:
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0]) if len(top2) == 2 else math.inf


def _accuracy_metrics(res, ref, out, labels, gates: Gates) -> None:
    """Accuracy (%) of the runtime and its difference from the reference, when labels are known."""
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.size == 0 or (labels < 0).any():
        return
    ref_acc = 100.0 * float(np.mean(ref.argmax(axis=1) == labels))
    res.accuracy = 100.0 * float(np.mean(out.argmax(axis=1) == labels))
    res.accuracy_delta = res.accuracy - ref_acc
    n = len(labels)
    res.images_lost = int(np.sum(ref.argmax(axis=1) == labels)) - int(np.sum(out.argmax(axis=1) == labels))
    res.allowed_lost = gates.allowed_loss(n)
    if res.allowed_lost is not None and res.images_lost > res.allowed_lost:
        allowed = (f"{gates.max_accuracy_drop:g}" if gates.alpha is None else
                   f"{100.0 * max(res.allowed_lost, 0) / n:.2f} on {n} images: a {gates.max_accuracy_drop:g}-point loss "
                   f"at {1 - gates.alpha:.0%} confidence")
        res.fail(f"accuracy {res.accuracy:.2f}% is {-res.accuracy_delta:.2f} points below the "
                 f"reference's {ref_acc:.2f}% (allowed: {allowed})")


# ---- metadata ----------------------------------------------------------------------------------
def check_metadata(meta: dict | None, classes: list[str], preprocess: dict, arch: str | None = None) -> list[str]:
    """Problems between an artifact's embedded metadata and the run's (empty list: all equal).

    Classes must be equal in order; resize/crop/interpolation exactly; mean/std numerically
    (np.isclose), since JSON round trips may print floats differently.
    """
    if not meta:
        return ["the artifact carries no tlexport metadata (classes, preprocessing)"]
    problems = []
    art_classes = meta.get("classes")
    if art_classes is None:
        problems.append("no class names in the artifact")
    elif list(art_classes) != list(classes):
        problems.append(_class_problem(list(art_classes), list(classes)))
    pre = meta.get("preprocess")
    if not isinstance(pre, dict):
        problems.append("no preprocessing in the artifact")
    else:
        problems += _preprocess_problems(pre, preprocess)
    if arch and meta.get("arch") and meta["arch"] != arch:
        problems.append(f"architecture differs: artifact {meta['arch']}, run {arch}")
    return problems


def _class_problem(art: list[str], run: list[str]) -> str:
    if sorted(art) == sorted(run):
        i = next(i for i, (a, b) in enumerate(zip(art, run)) if a != b)
        return f"class order differs (index {i} is {art[i]!r} in the artifact, {run[i]!r} in the run)"
    if len(art) != len(run):
        return f"class count differs: artifact {len(art)}, run {len(run)}"
    diff = sorted(set(art) ^ set(run))
    return f"class names differ ({', '.join(map(str, diff[:5]))})"


def _preprocess_problems(art: dict, run: dict) -> list[str]:
    problems = []
    for key in ("resize", "crop", "interpolation"):
        if art.get(key) != run.get(key):
            problems.append(f"{key} differs: artifact {art.get(key)!r}, run {run.get(key)!r}")
    for key in ("mean", "std"):
        a, b = art.get(key), run.get(key)
        try:
            same = len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-6, atol=1e-7))
        except (TypeError, ValueError):
            same = False
        if not same:
            problems.append(f"{key} differs: artifact {a}, run {b}")
    return problems


def record_metadata(result: RuntimeResult, read, run) -> None:
    """Check an artifact's embedded metadata against the run's and record it on `result`
    (`metadata_ok`, one "metadata: ..." failure per problem). `read` returns the metadata; an
    ArtifactError it raises (a schema error, one line naming the field) is the problem itself."""
    from ..errors import ArtifactError

    try:
        problems = check_metadata(read(), run.classes, run.meta["preprocess"], run.arch)
    except ArtifactError as e:
        problems = [str(e)]
    result.metadata_ok = not problems
    for p in problems:
        result.fail(f"metadata: {p}")

