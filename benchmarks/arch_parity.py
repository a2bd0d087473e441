"""fp32 parity error per architecture: the measurement behind ArchSpec.atol / rtol.

For each architecture: random weights whose BatchNorm statistics are measured on generated images
(so activations behave like a pretrained net's), a 1000-class head, ONNX fp32 through tlexport's
own exporter, then onnxruntime vs PyTorch eager on other generated images. Reported: the largest
absolute logit error, the largest |logit|, and their ratio (the relative error, which carries over
to a trained head whose logits are larger), beside the registry's current tolerance.

    python benchmarks/arch_parity.py --size 224 --images 16 [--arch mobilenet_v3_small ...] [--json out.json]

Takes minutes per large architecture on 2 CPU cores (the dynamo export traces the whole graph).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _images(folder: Path, n: int, size: int, seed: int) -> list:
    import random

    from tlexport.data.synth import draw_shape

    rng = random.Random(seed)
    return [draw_shape(("circle", "square", "triangle")[i % 3], size, rng) for i in range(n)]


def measure(arch: str, size: int, n_images: int) -> dict:
    from tlexport import models
    from tlexport.formats.onnx.graph import export_onnx, resolve_opset
    from tlexport.tables import archs

    spec = archs.get(arch)
    torch.manual_seed(0)
    model = models.create(arch, 1000, image_size=size)
    head = model.get_submodule(spec.head)
    if not head.weight.any():  # ViT zero-initialises its head: all logits would be exactly 0
        head.reset_parameters()
    transform = models.default_preprocess(arch).with_crop(size).eval_transform()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    calib = torch.stack([transform(im) for im in _images(Path("."), 32, size + size // 7, 1)])
    with torch.no_grad():
        model.train()(calib)
    model.eval()
    x = torch.stack([transform(im) for im in _images(Path("."), n_images, size + size // 7, 2)])
    with torch.inference_mode():
        ref = model(x).numpy().astype(np.float64)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        t0 = time.perf_counter()
        export_onnx(model, x[:2], path, opset=resolve_opset(None), dynamic=True, meta=_meta(arch, size))
        seconds = time.perf_counter() - t0
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"image": x.numpy()})[0].astype(np.float64)
    err = np.abs(out - ref)
    return {"arch": arch, "size": size, "images": n_images, "max_abs": float(err.max()),
            "max_logit": float(np.abs(ref).max()), "rel": float(err.max() / np.abs(ref).max()),
            "top1_agree": float(np.mean(out.argmax(1) == ref.argmax(1))),
            "registry_atol": spec.atol, "registry_rtol": spec.rtol, "export_s": round(seconds, 1)}


def _meta(arch: str, size: int) -> dict:
    from types import SimpleNamespace

    from tlexport.models import default_preprocess
    from tlexport.tables.metadata import build_metadata

    run = SimpleNamespace(classes=[str(i) for i in range(1000)], arch=arch,
                          preprocess=default_preprocess(arch).with_crop(size))
    return build_metadata(run, "0" * 64)


def main() -> None:
    from tlexport.tables import archs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=list(archs.TESTED))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for arch in args.arch:
        spec = archs.get(arch)
        size = -(-max(args.size, spec.min_size) // spec.size_multiple) * spec.size_multiple
        row = measure(arch, size, args.images)
        rows.append(row)
        print(f"{arch:20s} {size:4d}px max_abs {row['max_abs']:.2e} max|logit| {row['max_logit']:.2f} "
              f"rel {row['rel']:.2e} top1 {row['top1_agree']:.2f} (registry atol {spec.atol:g} "
              f"rtol {spec.rtol:g}) export {row['export_s']} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
