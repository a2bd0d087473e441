"""The in-graph preprocessing model (`model.uint8.onnx`, role "baked-preprocess"): one decoded
uint8 RGB image of any size in, logits and probabilities out (the contract is in `ingraph`), and
its self-check.

It is not a parity target (its input differs), so it is verified here, per image, against
tlexport's own preprocessing + the fp32 model (torch-eager) on the same decoded pixels: the val
images and the first of them at sizes of every kind (tall, wide, larger and smaller than the crop).
"""

from __future__ import annotations

import numpy as np

from ...errors import UsageError

MAX_IMAGES = 32
RANDOM_IMAGES = 8
# (width, height) of the extra copies of the first image: any H and W must work.
SIZES = ((37, 501), (640, 480), (1000, 333), (3000, 2000), (20, 30))
# The in-graph resize (onnxruntime's Resize antialias kernel, float weights) rounds a value the
# other way from Pillow's (double weights) now and then: by one level, on about 0.1 % of the
# values; bicubic's weights above 1 can carry a first-pass difference into a second level when
# upscaling (benchmarks/ingraph_resize.py; docs/deploy.md).
MAX_LEVELS = {"bilinear": 1, "bicubic": 2}
# The logits' tolerance against tlexport's own pipeline: the fp32 gate plus twice the largest
# change that the measured pixel differences (same pixels, same sizes, random signs) cause in
# this model's logits on these images.
SENSITIVITY_DRAWS, SAFETY = 2, 2.0


def build_baked(job, fp32_path, dst) -> list[str]:
    """model.uint8.onnx: the float model of `fp32_path` behind the in-graph preprocessing.

    Returns:
        notes for the manifest.
    Raises:
        UsageError: the run's resize filter cannot be reproduced in the graph.
    """
    import onnx

    from .graph import export_onnx, save_checked
    from .ingraph import pillow_shrinks_tall_images_vertically_first, unsupported_reason, wrap
    from .metadata import embed_onnx

    pre = job.run.preprocess
    reason = unsupported_reason(pre)
    if reason:
        raise UsageError(f"--bake-preprocess: {reason}")
    if job.options.batch.fixed not in (None, 1):  # the graph feeds one image: a batch-1 float model
        fp32_path = dst.with_name(dst.name + ".batch1.onnx")
        export_onnx(job.model, job.example[:1], fp32_path, opset=job.settings["opset"], dynamic=False, meta=job.meta)
    model = wrap(onnx.load(str(fp32_path)), pre, pillow_shrinks_tall_images_vertically_first())
    embed_onnx(model, {**job.meta, "batch": 1, "in_graph_preprocess": True})
    save_checked(model, dst)
    if fp32_path.name.endswith(".batch1.onnx"):
        fp32_path.unlink()
    return [f"input: one decoded RGB image, uint8 [H, W, 3], any H and W; outputs logits and probabilities "
            f"[1, K]; resize to {pre.resize} ({pre.interpolation}, antialiased), centre crop {pre.crop} and "
            "normalisation inside"]


def decoded_images(run, limit: int = MAX_IMAGES) -> tuple[list, list[str], str]:
    """Up to `limit` val images decoded to RGB (PIL), as an app decodes them, at their own sizes;
    seeded random images when the run has no readable val image. Returns (images, names, source)."""
    from PIL import Image

    from ...data.images import BadImage

    pre = run.preprocess
    images, names = [], []
    for path, _ in run.samples("val")[:limit]:
        try:
            images.append(pre.load(path))
            names.append(path.name)
        except BadImage:
            continue
    if images:
        return images, names, f"{len(images)} val images"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (pre.resize, pre.resize + 9, 3), dtype=np.uint8))
              for _ in range(RANDOM_IMAGES)]
    return images, [f"random-{i}" for i in range(RANDOM_IMAGES)], f"{RANDOM_IMAGES} random images"


def verification_images(run) -> tuple[list, list[str], str]:
    """Decoded RGB images (PIL): up to MAX_IMAGES val images, then the first of them at SIZES
    (random images when the run has no val images).

    Returns:
        (images, names, source description)
    """
    from PIL import Image

    images, names, source = decoded_images(run)
    first, first_name = images[0], names[0]
    for w, h in SIZES:
        images.append(first.resize((w, h), Image.BICUBIC))
        names.append(f"{first_name}@{w}x{h}")
    return images, names, source + f" + the first at {', '.join(f'{w}x{h}' for w, h in SIZES)}"


def _sessions(path, pre, opset: int):
    """onnxruntime sessions of the artifact and of its preprocessing nodes alone."""
    import onnxruntime as ort

    from .ingraph import pillow_shrinks_tall_images_vertically_first, preprocess_only

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    model = ort.InferenceSession(str(path), opts, providers=cpu)
    crop = ort.InferenceSession(preprocess_only(pre, opset, pillow_shrinks_tall_images_vertically_first()).SerializeToString(), opts, providers=cpu)
    return model, crop


def measure(path, run, images) -> dict:
    """Run the in-graph model on each decoded image, beside tlexport's own pipeline.

    Returns:
        {"ref", "graph", "probs": logits/probabilities [N, K]; "levels": max |in-graph crop -
         Pillow crop| per image; "differing": fraction of crop values that differ; "inside":
         max |graph logits - fp32 model on the in-graph crop|; "sensitivity": per image, the
         largest logit change the measured pixel differences cause with random signs}
    """
    from ...runtimes import reference_runtime
    from .graph import opset_of

    pre = run.preprocess
    model, crop_session = _sessions(path, pre, opset_of(path))
    ref_crops = np.stack([pre.crop_uint8(im) for im in images]).astype(np.int16)
    graph_crops = np.stack([crop_session.run(None, {"image": np.asarray(im)})[0][0].transpose(1, 2, 0)
                            for im in images]).astype(np.int16)
    outs = [model.run(None, {"image": np.asarray(im)}) for im in images]
    diff = graph_crops - ref_crops
    rng = np.random.default_rng(0)
    perturbed = [np.clip(ref_crops + rng.choice((-1, 1), diff.shape) * np.abs(diff), 0, 255)
                 for _ in range(SENSITIVITY_DRAWS)]
    batches = [ref_crops, graph_crops, *perturbed]
    floats = np.concatenate([np.stack([pre.normalize(c.astype(np.uint8)).transpose(2, 0, 1) for c in b])
                             for b in batches]).astype(np.float32)
    with reference_runtime(run.dir) as ref_rt:
        logits = ref_rt.run(floats).reshape(len(batches), len(images), -1)
    graph = np.concatenate([o[0] for o in outs])
    return {"ref": logits[0], "graph": graph, "probs": np.concatenate([o[1] for o in outs]),
            "levels": np.abs(diff).reshape(len(images), -1).max(axis=1),
            "differing": float((diff != 0).mean()), "inside": float(np.abs(graph - logits[1]).max()),
            "sensitivity": np.abs(logits[2:] - logits[0]).max(axis=(0, 2))}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _failures(m: dict, tolerance: float, names, interpolation: str) -> list[str]:
    from ...verify.compare import DEFAULT_ATOL, DEFAULT_RTOL

    out = []
    worst = int(m["levels"].argmax())
    if m["levels"][worst] > MAX_LEVELS[interpolation]:
        out.append(f"in-graph resize differs from Pillow's by {int(m['levels'][worst])} levels on {names[worst]} "
                   f"(at most {MAX_LEVELS[interpolation]} expected for {interpolation})")
    if m["inside"] > DEFAULT_ATOL + DEFAULT_RTOL * float(np.abs(m["ref"]).max()):
        out.append(f"normalisation + model inside the graph differ from the fp32 model by {m['inside']:.3g}")
    flips = [n for n, a, b in zip(names, m["graph"].argmax(1), m["ref"].argmax(1)) if a != b]
    if flips:
        out.append(f"top-1 differs from tlexport's pipeline on {len(flips)} images ({', '.join(flips[:3])})")
    max_abs = float(np.abs(m["graph"] - m["ref"]).max())
    if max_abs > tolerance:
        out.append(f"max abs logit difference {max_abs:.3g} over the tolerance {tolerance:.3g}")
    if not np.allclose(m["probs"], _softmax(m["graph"].astype(np.float64)), atol=1e-6):
        out.append("probabilities are not the softmax of the logits")
    return out


def verify_baked(folder, artifacts, run) -> None:
    """Verify each in-graph preprocessing artifact per image (see the module docstring); set
    `a.verified` and `a.verification`."""
    from ...verify.compare import DEFAULT_ATOL

    images, names, source = verification_images(run)
    for a in artifacts:
        m = measure(folder / a.file, run, images)
        tolerance = DEFAULT_ATOL + SAFETY * float(m["sensitivity"].max())
        failures = _failures(m, tolerance, names, run.preprocess.interpolation)
        a.verified = not failures
        agree = float((m["graph"].argmax(1) == m["ref"].argmax(1)).mean())
        a.verification = {
            "passed": a.verified, "max_abs": float(np.abs(m["graph"] - m["ref"]).max()), "tolerance": tolerance,
            "mean_abs": float(np.abs(m["graph"] - m["ref"]).mean()), "top1_agreement": agree,
            "flips": int(round((1 - agree) * len(names))), "pixel_max_levels": int(m["levels"].max()),
            "pixels_differing": round(m["differing"], 6), "inside_max_abs": m["inside"],
            "reason": "; ".join(failures) or None, "inputs": source,
            "against": "tlexport's preprocessing (Pillow) + torch-eager fp32 on the same decoded pixels"}
