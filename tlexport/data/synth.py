"""A small deterministic synthetic dataset of drawn shapes, for quickstart, tests and benchmarks.

Each class is a shape; colour, size, position, rotation, background and noise vary per image, so
the task needs a real classifier but is learnable from scratch in a few epochs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")


def _polygon(cx, cy, r, n, rot, inner=None):
    pts = []
    steps = n * 2 if inner else n
    for i in range(steps):
        rad = (inner if inner and i % 2 else r)
        a = rot + 2 * math.pi * i / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def draw_shape(shape: str, size: int, rng: random.Random):
    """One RGB PIL image of `shape` on a noisy background."""
    from PIL import Image, ImageDraw

    # Colours vary freely but the shape always stands out in brightness (dark on light or light
    # on dark), as objects in photos mostly do; the class lives in the outline alone.
    dark = tuple(rng.randint(0, 100) for _ in range(3))
    light = tuple(rng.randint(155, 255) for _ in range(3))
    bg, fg = (dark, light) if rng.random() < 0.5 else (light, dark)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.4)
    cx, cy = (rng.uniform(r, size - r) for _ in range(2))
    rot = rng.uniform(0, 2 * math.pi)
    w = max(2, int(r / 3))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=w)
    elif shape == "square":
        d.polygon(_polygon(cx, cy, r, 4, rot), fill=fg)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, rot), fill=fg)
    elif shape == "star":
        d.polygon(_polygon(cx, cy, r, 5, rot, inner=r * 0.45), fill=fg)
    elif shape == "cross":
        for a in (rot, rot + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            d.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fg, width=w)
    else:
        raise ValueError(shape)
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 12, (size, size, 3))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_dataset(root: Path | str, classes=SHAPES[:4], per_class: int = 40, size: int = 64,
                 seed: int = 0, split: bool = False, val_per_class: int = 10, fmt: str = "png") -> Path:
    """Write `root/<class>/<i>.<fmt>` (or `root/train|val/<class>/...` with split=True)."""
    root = Path(root)
    rng = random.Random(seed)
    parts = [("train", per_class), ("val", val_per_class)] if split else [("", per_class)]
    for part, n in parts:
        for shape in classes:
            folder = root / part / shape if part else root / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(shape, size, rng).save(folder / f"{shape}_{i:04d}.{fmt}")
    return root
