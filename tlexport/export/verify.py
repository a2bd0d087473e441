"""Self-check of the baked-preprocessing model (`model.uint8.onnx`), which takes uint8 NHWC crops
and so is not a `tlexport.parity` target: its logits must match torch-eager's on the same images
with parity's own fp32 gates (`parity.compare`). Every other artifact is checked by parity itself.
"""

from __future__ import annotations

import numpy as np

MAX_IMAGES = 32
RANDOM_IMAGES = 8


def verification_inputs(run) -> tuple[np.ndarray, list[str], str]:
    """uint8 NHWC crops of up to MAX_IMAGES val images (random images when there are none).

    Returns:
        (uint8 array [N, crop, crop, 3], image names, source description)
    """
    from ..images import BadImage, load_rgb

    pre = run.preprocess
    crops, names = [], []
    for path, _ in run.samples("val")[:MAX_IMAGES]:
        try:
            crops.append(pre.crop_uint8(load_rgb(path)))
            names.append(path.name)
        except BadImage:
            continue
    if crops:
        return np.stack(crops), names, f"{len(crops)} val images"
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (RANDOM_IMAGES, pre.crop, pre.crop, 3), dtype=np.uint8)
    return crops, [f"random-{i}" for i in range(RANDOM_IMAGES)], f"{RANDOM_IMAGES} random images"


def verify_baked(folder, artifacts, run) -> None:
    """Compare each baked artifact with torch-eager fed the same crops normalised in numpy; set
    `a.verified` and `a.verification` (fp32 gates: atol/rtol and 100% top-1 agreement)."""
    from ..parity import compare, gates_for
    from ..runtimes import for_artifact, reference_runtime

    crops, names, source = verification_inputs(run)
    floats = np.stack([run.preprocess.normalize(c).transpose(2, 0, 1) for c in crops]).astype(np.float32)
    ref = reference_runtime(run.dir).load().run(floats)
    for a in artifacts:
        logits = for_artifact(folder / a.file).load().run_raw(crops)
        res = compare(ref, logits, None, names, "fp32", gates_for("fp32"), classes=run.classes)
        a.verified = bool(res.passed)
        a.verification = {"passed": a.verified, "max_abs": res.max_abs, "mean_abs": res.mean_abs,
                          "top1_agreement": (res.top1_agreement or 0.0) / 100, "flips": len(res.flips),
                          "reason": "; ".join(res.failures) or None, "inputs": source}

