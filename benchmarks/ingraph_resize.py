"""Measure the in-graph resize + centre crop (tlexport/formats/onnx/ingraph.py) against Pillow's,
as tlexport's own preprocessing does it (`Preprocess.crop_uint8`), on generated photo-like images
of many sizes and aspect ratios (tall, wide, larger and smaller than the crop), for the bilinear
and bicubic filters and several resize sizes. This is where the in-graph model's pixel tolerance
(`tlexport.formats.onnx.baked.MAX_LEVELS`) comes from; docs/deploy.md quotes the result.

Not a timing benchmark: run it any time.

    PYTHONPATH=. python benchmarks/ingraph_resize.py [--images 120] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The sizes the issue names, then random ones (fixed seed) with aspect ratios up to 1:14.
NAMED = ((501, 37), (480, 640), (333, 1000), (2000, 3000), (30, 20), (48, 48), (61, 20), (700, 300))


def photo(h: int, w: int, rng) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients and edges plus sensor-like noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / (5 + 9 * c) + y / (13 - 3 * c)) for c in range(3)], -1)
    base += 60 * ((x // max(w // 5, 1) + y // max(h // 4, 1)) % 2)[..., None]
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def sizes(n: int, rng) -> list[tuple[int, int]]:
    out = list(NAMED)
    while len(out) < n:
        h, w = (int(v) for v in rng.integers(16, 900, 2))
        out.append((h, w))
    return out


def measure(n_images: int) -> dict:
    import onnxruntime as ort
    from PIL import Image

    from tlexport.data.preprocess import Preprocess
    from tlexport.formats.onnx.ingraph import pillow_shrinks_tall_images_vertically_first, preprocess_only

    rng = np.random.default_rng(0)
    order = pillow_shrinks_tall_images_vertically_first()
    shapes = sizes(n_images, rng)
    rows = []
    for interp in ("bilinear", "bicubic"):
        for resize, crop in ((256, 224), (232, 224), (55, 48)):
            pre = Preprocess(resize, crop, interpolation=interp)
            sess = ort.InferenceSession(preprocess_only(pre, 18, order).SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            worst, differing, total = 0, 0, 0
            for h, w in shapes:
                img = photo(h, w, rng)
                ref = pre.crop_uint8(Image.fromarray(img)).astype(np.int16)
                got = sess.run(None, {"image": img})[0][0].transpose(1, 2, 0).astype(np.int16)
                d = np.abs(got - ref)
                worst, differing, total = max(worst, int(d.max())), differing + int((d > 0).sum()), total + d.size
            rows.append({"interpolation": interp, "resize": resize, "crop": crop, "images": len(shapes),
                         "max_levels": worst, "fraction_differing": differing / total})
    return {"date": time.strftime("%Y-%m-%d"), "pillow_tall_vertical_first": order, "rows": rows,
            "versions": _versions()}


def _versions() -> dict:
    import onnxruntime
    import PIL

    return {"onnxruntime": onnxruntime.__version__, "pillow": PIL.__version__, "numpy": np.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    result = measure(args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ingraph-resize-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# In-graph resize vs Pillow ({result['date']})", "",
             f"{result['rows'][0]['images']} photo-like images per row; versions {result['versions']}; "
             f"Pillow shrinks tall images vertically first: {result['pillow_tall_vertical_first']}.", "",
             "| filter | resize | crop | max difference (levels) | values differing |", "|---|---|---|---|---|"]
    lines += [f"| {r['interpolation']} | {r['resize']} | {r['crop']} | {r['max_levels']} | "
              f"{100 * r['fraction_differing']:.3f} % |" for r in result["rows"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
