"""The baked-preprocessing model (`model.uint8.onnx`): a wrapper that takes uint8 NHWC crops and
normalises inside the graph, and its self-check. It is not a parity target (its input differs),
so its logits are compared with torch-eager's on the same images with parity's own fp32 gates
(`verify.compare`). Every other artifact is checked by parity itself.
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
    from ...data.images import BadImage

    pre = run.preprocess
    crops, names = [], []
    for path, _ in run.samples("val")[:MAX_IMAGES]:
        try:
            crops.append(pre.crop_uint8(pre.load(path)))
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
    from ...runtimes import for_artifact, reference_runtime
    from ...verify.compare import compare, gates_for

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


class BakedPreprocess:
    """Factory for a wrapper module: uint8 NHWC RGB at the crop size -> the float model.

    Cast, scale by 1/255, normalise and transpose inside the graph, so a camera pipeline can feed
    its crop directly.
    """

    @staticmethod
    def wrap(model, preprocess):
        import torch

        class Baked(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model
                mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
                std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
                self.register_buffer("scale", 1.0 / (255.0 * std))
                self.register_buffer("shift", -mean / std)

            def forward(self, image):
                x = image.permute(0, 3, 1, 2).to(torch.float32)
                return self.model(x * self.scale + self.shift)

        # The buffers follow the model's device (a CUDA export would otherwise mix devices).
        device = next(model.parameters()).device
        return Baked().to(device).eval()


def build_baked(job, dst) -> None:
    """model.uint8.onnx: the float model behind the uint8 NHWC wrapper, exported like model.onnx."""
    import torch

    from .graph import export_onnx

    baked = BakedPreprocess.wrap(job.model, job.run.preprocess)
    n, _, h, w = job.example.shape
    example = torch.zeros((n, h, w, 3), dtype=torch.uint8)
    export_onnx(baked, example, dst, opset=job.opset, dynamic=job.dynamic, meta=job.meta)
