"""Generated phone-like photos for the data-path benchmarks: 4032x3024 JPEGs of about 4 MB with
gradients, multi-scale textures, sensor noise and a class shape, a third of them stored
sideways with an EXIF orientation (as phones do), and many small files for the scan.

    from photos import write_photos, write_small_files
    write_photos(folder, classes=("circle", "square"), per_class=8)   # folder/<class>/<i>.jpg
"""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PHONE = (4032, 3024)
SHAPES = ("circle", "square", "triangle", "star")
# EXIF orientations a phone writes when held sideways or upside down; exif_transpose undoes them
_STORED = {6: "ROTATE_90", 8: "ROTATE_270", 3: "ROTATE_180"}


def _value_noise(rng, h, w, octaves=((6, 8, 1.0), (24, 32, 0.5), (96, 128, 0.25), (384, 512, 0.12))):
    """Sum of smooth random fields at several scales (clouds, foliage, walls), in [-1, 1]."""
    from PIL import Image

    out = np.zeros((h, w), np.float32)
    for gh, gw, amp in octaves:
        grid = (rng.random((gh, gw), dtype=np.float32) * 255).astype(np.uint8)
        out += amp * (np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32) / 127.5 - 1)
    return out / sum(a for *_, a in octaves)


def _mask(shape: str, size, rng, radius=(0.2, 0.38)) -> np.ndarray:
    """The class shape as a soft [0, 1] mask, drawn at 1/4 size and scaled up (smooth edges);
    its radius a random fraction in `radius` of the shorter side."""
    from PIL import Image, ImageDraw

    w, h = size[0] // 4, size[1] // 4
    m = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(m)
    r = min(w, h) * rng.uniform(*radius)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    rot = rng.uniform(0, 2 * math.pi)
    n, inner = {"square": (4, None), "triangle": (3, None), "star": (5, 0.45)}.get(shape, (0, None))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        steps = n * 2 if inner else n
        pts = [(cx + (r * inner if inner and i % 2 else r) * math.cos(rot + 2 * math.pi * i / steps),
                cy + (r * inner if inner and i % 2 else r) * math.sin(rot + 2 * math.pi * i / steps))
               for i in range(steps)]
        d.polygon(pts, fill=255)
    return np.asarray(m.resize(size, Image.BILINEAR), np.float32) / 255.0


def make_photo(shape: str, seed: int, size=PHONE, radius=(0.2, 0.38), contrast: float | None = None):
    """One photo-like RGB PIL image of `size` with `shape` on a textured, graded background.

    Args:
        radius: range of the shape's radius as a fraction of the shorter side.
        contrast: the shape's colour differs from the mean background by this much per channel
            (None: a random colour). Small shapes at low contrast make the task depend on detail.
    """
    from PIL import Image

    rng, prng = np.random.default_rng(seed), random.Random(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = ((xx * math.cos(a) + yy * math.sin(a)) / math.hypot(w, h) + 0.5)[..., None]
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    img = c0 + (c1 - c0) * ramp
    img += 45 * _value_noise(rng, h, w)[..., None] * rng.uniform(0.5, 1.0, 3)
    base = rng.uniform(0, 255, 3) if contrast is None else (c0 + c1) / 2 + contrast * rng.choice([-1.0, 1.0], 3)
    fg = base + 25 * _value_noise(rng, h, w)[..., None]
    m = _mask(shape, size, prng, radius)[..., None]
    img = img * (1 - m) + fg * m
    img += 5.0 * rng.standard_normal((h, w, 3), dtype=np.float32)  # sensor noise: what makes phone JPEGs big
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write_one(job) -> int:
    from PIL import Image

    path, shape, seed, size, quality, kw = job
    img = make_photo(shape, seed, size, **kw)
    orientation = (6, 8, 3)[(seed // 3) % 3] if seed % 3 == 0 else 1  # every third one turned
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
        img = img.transpose(getattr(Image.Transpose, _STORED[orientation]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=quality, exif=exif, subsampling=0)
    return Path(path).stat().st_size


def write_photos(folder: Path, classes=SHAPES[:2], per_class: int = 8, size=PHONE, quality: int = 92,
                 seed: int = 0, workers: int | None = None, **photo) -> dict:
    """folder/<class>/<class>_<i>.jpg (`photo`: make_photo's radius / contrast); returns
    {"files", "mean_bytes", "size"}."""
    jobs = [(str(Path(folder) / c / f"{c}_{i:04d}.jpg"), c, seed * 100_003 + k * 10_007 + i, size, quality, photo)
            for k, c in enumerate(classes) for i in range(per_class)]
    with ProcessPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        sizes = list(pool.map(_write_one, jobs))
    return {"files": len(jobs), "mean_bytes": int(sum(sizes) / len(sizes)), "size": list(size)}


def write_small_files(folder: Path, n: int, classes=("a", "b", "c", "d"), px: int = 64, seed: int = 0) -> int:
    """`n` small JPEG/PNG files (a quarter PNG) in folder/<class>/, noisy so each file differs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        c = classes[i % len(classes)]
        (Path(folder) / c).mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8))
        img.save(Path(folder) / c / f"{i:06d}.{'png' if i % 4 == 0 else 'jpg'}")
    return n


def pre_resized_copy(src: Path, dst: Path, side: int = 256, quality: int = 92) -> None:
    """The same tree with every image's shorter side at `side` (EXIF applied): the baseline of
    training from already-small files."""
    from PIL import Image, ImageOps

    for f in sorted(Path(src).rglob("*.jpg")):
        out = Path(dst) / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im = ImageOps.exif_transpose(im)
            w, h = im.size
            scale = side / min(w, h)
            im.resize((round(w * scale), round(h * scale)), Image.BILINEAR).save(out, quality=quality)


# ---- what the data-path benchmarks share ----------------------------------------------------------
def photo_folder(folder: Path, **kw) -> tuple[Path, dict]:
    """`write_photos(folder, **kw)` once: a marker file keeps a finished folder for the next run."""
    import json

    marker = Path(folder) / ".complete"
    if not marker.is_file():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(write_photos(folder, **kw)))
    return Path(folder), json.loads(marker.read_text())


def add_common_args(ap, work: str, out: Path) -> None:
    """--photo-size, --work, --out, --smoke, as every data-path benchmark takes them."""
    ap.add_argument("--photo-size", default="4032x3024")
    ap.add_argument("--work", type=Path, default=Path("/tmp") / work, help="generated data and runs (kept)")
    ap.add_argument("--out", type=Path, default=out, help="where the .md and .json results go")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script works")


def machine_line(env: dict, load_after) -> str:
    return (f"CPU: {env.get('cpu')}; usable cores {env.get('usable_cores')}; load before "
            f"{env.get('load_average')}, after {load_after}.")


def write_results(out: Path, name: str, result: dict, text: str) -> None:
    """out/<name>-<date>.json and .md, and the Markdown on stdout."""
    import json
    import time

    stamp = time.strftime("%Y-%m-%d")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}-{stamp}.json").write_text(json.dumps(result, indent=1, default=str))
    (Path(out) / f"{name}-{stamp}.md").write_text(text)
    print(text)


def table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
