"""examples/node: the Node.js app decodes every image mode as tlexport does and prints the same
top-k as `tlexport predict`, with the in-graph preprocessing model in onnxruntime-node.

Needs `node`; its npm packages are installed from the committed lock file when missing
(`npm ci --ignore-scripts`: onnxruntime-node's install script would fetch GPU binaries).
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_export import full_export

from tlexport.cli import cli

APP = Path(__file__).resolve().parents[1] / "examples" / "node"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")
# jpeg-js is not libjpeg: its own IDCT and colour conversion, and no "fancy" chroma upsampling,
# so a JPEG's pixels differ by a few levels; on these files the probabilities moved by at most
# 2e-3 (PNGs: 1e-8, the same pixels), so this is five times the measured.
JPEG_PROB_TOL = 0.01


@pytest.fixture(scope="module")
def app():
    if not (APP / "node_modules" / "onnxruntime-node").is_dir():
        done = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=APP,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return APP


@pytest.fixture(scope="module")
def model(fake_run, tmp_path_factory) -> Path:
    return full_export(fake_run, tmp_path_factory) / "model.uint8.onnx"


def _png(path: Path, arr: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG (Pillow writes no 16-bit colour): big-endian samples, filter 0 rows."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """One file per image mode and orientation tlexport handles, of assorted sizes."""
    import random

    from PIL import Image

    from tlexport.data.synth import draw_shape

    out = tmp_path_factory.mktemp("modes")
    rng, nrng = random.Random(3), np.random.default_rng(3)
    base = draw_shape("triangle", 160, rng).resize((90, 60))
    alpha = Image.fromarray(nrng.integers(0, 256, (60, 90), dtype=np.uint8))
    rgba = base.copy()
    rgba.putalpha(alpha)
    base.save(out / "rgb.png")
    rgba.save(out / "rgba.png")
    la = base.convert("L").copy()
    la.putalpha(alpha)
    la.convert("LA").save(out / "la.png")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(out / "palette.png")
    pal.save(out / "palette_transparent.png", transparency=3)
    base.convert("L").save(out / "gray.png")
    base.convert("1").save(out / "bilevel.png")
    gray16 = (np.asarray(base.convert("L"), np.uint32) * 257 + nrng.integers(0, 257, (60, 90))).astype(np.uint16)
    _png(out / "gray16.png", gray16, 0)
    rgb16 = np.asarray(base, np.uint32) * 257 + nrng.integers(0, 257, (60, 90, 3))
    _png(out / "rgb16.png", rgb16, 2)
    _png(out / "rgba16.png", np.concatenate([rgb16, np.asarray(alpha, np.uint32)[..., None] * 257], -1), 6)
    for orientation, ext in ((6, "jpg"), (3, "png"), (8, "jpg"), (2, "png")):
        exif = Image.Exif()
        exif[0x0112] = orientation
        base.save(out / f"exif{orientation}.{ext}", exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    base.save(out / "rgb444.jpg", quality=95, subsampling=0)
    base.save(out / "rgb420.jpg", quality=95)
    base.convert("L").save(out / "gray.jpg", quality=95)
    base.convert("CMYK").save(out / "cmyk.jpg", quality=95)
    return out


def _node(*args, cwd=APP) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_node_decodes_pngs_exactly_as_tlexport_and_jpegs_closely(app, images):
    from tlexport.data.images import load_rgb

    script = ("const {decode}=require('./decode');const i=decode(process.argv[1]);"
              "process.stdout.write(JSON.stringify([i.height,i.width])+'\\n'+Buffer.from(i.data).toString('base64'))")
    for f in sorted(images.iterdir()):
        done = _node("-e", script, f)
        assert done.returncode == 0, (f.name, done.stderr)
        shape, data = done.stdout.split("\n", 1)
        got = np.frombuffer(base64.b64decode(data), np.uint8).reshape(*json.loads(shape), 3).astype(int)
        want = np.asarray(load_rgb(f)).astype(int)
        assert got.shape == want.shape, f.name  # EXIF rotations swap height and width
        if f.suffix == ".png":
            assert np.array_equal(got, want), (f.name, int(np.abs(got - want).max()))
        else:
            assert np.abs(got - want).mean() < 3, (f.name, float(np.abs(got - want).mean()))


def test_node_app_prints_the_top_k_of_tlexport_predict(app, model, images):
    done = _node("classify.js", model, images, "--top-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    node = {Path(r["image"]).name: {t["index"]: t["prob"] for t in r["top"]} for r in json.loads(done.stdout)}
    r = CliRunner().invoke(cli, ["predict", str(model), str(images), "--top-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    ours = {Path(x["image"]).name: {t["index"]: t["prob"] for t in x["top"]} for x in json.loads(r.stdout)}
    assert set(node) == set(ours) == {f.name for f in images.iterdir()}
    for name, probs in ours.items():
        tol = 1e-5 if name.endswith(".png") else JPEG_PROB_TOL
        diff = max(abs(probs[i] - node[name][i]) for i in probs)
        assert diff <= tol, (name, diff)


def test_node_app_refuses_a_model_without_in_graph_preprocessing(app, model, images):
    done = _node("classify.js", model.with_name("model.onnx"), images)
    assert done.returncode == 1 and "model.uint8.onnx" in done.stderr and "Error:" in done.stderr
    done = _node("classify.js", model)
    assert done.returncode == 2 and "usage:" in done.stderr
