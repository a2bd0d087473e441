"""Export's self-check: every artifact against torch-eager on the run's val images (or random
inputs), with the per-precision gates of the parity command. Deliberately small; `tlexport.parity`
is the full per-image report.

Gates: fp32 |a - b| <= atol + rtol * |b| elementwise (atol 1e-4, rtol 1e-3) and 100% top-1
agreement; fp16 finite and >= 99% top-1 agreement; int8 >= 98% top-1 agreement.
"""

from __future__ import annotations

import numpy as np

FP32_ATOL, FP32_RTOL = 1e-4, 1e-3
MIN_AGREEMENT = {"fp32": 1.0, "fp16": 0.99, "int8": 0.98}
MAX_IMAGES = 32
RANDOM_IMAGES = 8


def verification_inputs(run) -> tuple[np.ndarray, str]:
    """uint8 NHWC crops of up to MAX_IMAGES val images (random images when there are none).

    Returns:
        (uint8 array [N, crop, crop, 3], source description)
    """
    from ..images import BadImage, load_rgb

    pre = run.preprocess
    crops = []
    for path, _ in run.samples("val")[:MAX_IMAGES]:
        try:
            crops.append(pre.crop_uint8(load_rgb(path)))
        except BadImage:
            continue
    if crops:
        return np.stack(crops), f"{len(crops)} val images"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (RANDOM_IMAGES, pre.crop, pre.crop, 3), dtype=np.uint8), \
        f"{RANDOM_IMAGES} random images"


def compare(logits: np.ndarray, ref: np.ndarray, precision: str) -> dict:
    """Errors and top-1 agreement of `logits` against `ref`, with the gate's verdict."""
    finite = bool(np.isfinite(logits).all())
    diff = np.abs(logits.astype(np.float64) - ref)
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    out = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "top1_agreement": agreement,
           "finite": finite, "shape_ok": logits.shape == ref.shape}
    reason = None
    if not out["shape_ok"]:
        reason = f"output shape {logits.shape} != {ref.shape}"
    elif not finite:
        reason = "non-finite logits"
    elif agreement < MIN_AGREEMENT[precision]:
        reason = f"top-1 agreement {agreement:.1%} < {MIN_AGREEMENT[precision]:.0%}"
    elif precision == "fp32" and not np.all(diff <= FP32_ATOL + FP32_RTOL * np.abs(ref)):
        reason = f"max abs error {out['max_abs']:.2e} beyond atol {FP32_ATOL} / rtol {FP32_RTOL}"
    out["passed"] = reason is None
    out["reason"] = reason
    return out


def _run_chunked(fn, x: np.ndarray, batch) -> np.ndarray:
    """All of `x` through `fn`, in chunks of a fixed batch size (padded) when the graph has one."""
    if not isinstance(batch, int):
        return fn(x)
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        pad = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        out.append(fn(pad)[: len(chunk)])
    return np.concatenate(out)


def verify_artifacts(folder, artifacts, run) -> dict:
    """Run each artifact and the torch-eager reference on the same inputs; set `a.verified` and
    `a.verification` on every artifact.

    Returns:
        {"reference", "inputs", "passed", "gates"} for manifest.json.
    """
    from ..runtimes import for_artifact, reference_runtime

    crops, source = verification_inputs(run)
    floats = np.stack([run.preprocess.normalize(c).transpose(2, 0, 1) for c in crops]).astype(np.float32)
    ref = reference_runtime(run.dir).load().run(floats).astype(np.float64)
    for a in artifacts:
        device = "cuda" if a.format == "torchscript" and a.precision == "fp16" else "cpu"
        rt = for_artifact(folder / a.file, device=device).load()
        fn = rt.run_raw if a.role == "baked-preprocess" else rt.run
        logits = _run_chunked(fn, crops if a.role == "baked-preprocess" else floats, a.inputs[0]["shape"][0])
        a.verification = compare(logits, ref, a.precision)
        a.verified = a.verification["passed"]
    return {"reference": "torch-eager/fp32/cpu", "inputs": source,
            "passed": all(a.verified for a in artifacts),
            "gates": {"fp32": {"atol": FP32_ATOL, "rtol": FP32_RTOL, "top1_agreement": 1.0},
                      "fp16": {"top1_agreement": MIN_AGREEMENT["fp16"], "finite": True},
                      "int8": {"top1_agreement": MIN_AGREEMENT["int8"]}}}
