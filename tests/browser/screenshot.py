"""The screenshot in docs/web.md: a small model trained here on two of matplotlib's sample images
(Grace Hopper's portrait, a gift-box icon) and tlexport's drawn shapes, exported with
`--format web`, served on 127.0.0.1 and handed three files through the page's file input in
headless Chromium.

    python tests/browser/screenshot.py [docs/img/web-page.png [WORK_DIR]]

(WORK_DIR keeps the data, run and export for another try; by default a temporary folder.)

Needs what tests/test_web.py needs (Chromium, node, `npm ci --ignore-scripts` in tests/browser).
The model is a toy made for the picture (three easy classes, trained for a minute from scratch):
the screenshot shows the page, not a classifier worth shipping.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE.parent)]

from browser.pagedriver import Driver, StaticServer, missing  # noqa: E402


def sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _jitter(img, rng: random.Random):
    from PIL import ImageEnhance

    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))


def portrait(rng: random.Random, size: int):
    from PIL import Image

    photo = Image.open(sample("grace_hopper.jpg")).convert("RGB")
    side = int(min(photo.size) * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
    img = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
    return _jitter(img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img, rng)


def gift(rng: random.Random, size: int):
    from PIL import Image

    icon = Image.open(sample("Minduka_Present_Blue_Pack.png")).convert("RGBA")
    side = int(size * rng.uniform(0.5, 0.95))
    icon = icon.resize((side, side), Image.BILINEAR)
    background = Image.new("RGBA", (size, size), tuple(rng.randint(150, 255) for _ in range(3)) + (255,))
    background.alpha_composite(icon, (rng.randint(0, size - side), rng.randint(0, size - side)))
    return _jitter(background.convert("RGB"), rng)


def dataset(root: Path, size: int = 96, train: int = 36, val: int = 8) -> Path:
    from tlexport.data.synth import SHAPES, draw_shape

    rng = random.Random(0)
    makers = {"portrait": portrait, "gift box": gift,
              "drawn shape": lambda r, s: draw_shape(r.choice(SHAPES), s, r)}
    for part, n in (("train", train), ("val", val)):
        for label, make in makers.items():
            folder = root / part / label
            folder.mkdir(parents=True)
            for i in range(n):
                make(rng, size).save(folder / f"{i:03d}.png")
    return root


def tlexport(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "tlexport", *args], check=True, env=env)


def prepare(tmp: Path) -> None:
    """Data, a trained run and its web export in `tmp` (what is already there is kept)."""
    if not (tmp / "data").is_dir():
        dataset(tmp / "data")
    if not (tmp / "run" / "best.safetensors").is_file():
        tlexport("train", "--data", str(tmp / "data"), "--arch", "resnet18", "--weights", "none", "--image-size",
                 "64", "--epochs", "10", "--batch-size", "16", "--lr", "0.02", "--crop-scale", "0.5", "--workers",
                 "0", "--out", str(tmp / "run"), "--overwrite", "--quiet")
    tlexport("export", str(tmp / "run"), "--format", "web", "--out", str(tmp / "export"))


def main(target: Path, work: Path | None) -> None:
    reason = missing()
    if reason:
        sys.exit(f"cannot take the screenshot: {reason}")
    os.environ.setdefault("TLEXPORT_ORT_WEB", str(HERE))
    with tempfile.TemporaryDirectory(prefix="tlexport-shot-") as scratch:
        tmp = Path(work or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        prepare(tmp)
        shape = tmp / "shapes.png"
        from tlexport.data.synth import draw_shape

        draw_shape("star", 160, random.Random(5)).save(shape)
        server = StaticServer(tmp / "export" / "model.web", isolate=True)
        driver = Driver()
        try:
            driver.call("open", url=server.url + "?k=3")
            shown = driver.call("files", paths=[str(shape), str(sample("Minduka_Present_Blue_Pack.png")),
                                                str(sample("grace_hopper.jpg"))])
            for card in shown["results"]:
                print(card["name"], [(r["label"], round(r["probability"], 3)) for r in card["top"]], card["latency"])
            target.parent.mkdir(parents=True, exist_ok=True)
            driver.call("screenshot", path=str(target.resolve()))
        finally:
            driver.close()
            server.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "web-page.png",
         Path(sys.argv[2]) if len(sys.argv) > 2 else None)
