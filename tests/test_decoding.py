"""One decoding definition: every image mode and EXIF orientation gives the same pixels in
training, evaluation, predict, parity and the example apps, and JPEGs are decoded at the
smallest DCT scale that keeps the resize target."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_export import full_export

from tlexport.data import images
from tlexport.data.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
PRE = Preprocess(resize=55, crop=48)  # the fake run's preprocessing (resnet18 at 48 px)
# exif_transpose's operation per orientation; each of these is its own inverse except 6 <-> 8
_EXIF_OP = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_INVERSE = {**_EXIF_OP, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _base(size=(96, 72), seed=0) -> Image.Image:
    from tlexport.data.synth import draw_shape

    img = draw_shape("triangle", max(size), random.Random(seed))
    return img.resize(size)  # not square: a rotation that is wrong shows


def write_mode_images(folder: Path) -> dict[str, Path]:
    """One file per mode and EXIF orientation (the cases of issue 18.3), plus a large JPEG that
    is decoded at a reduced scale."""
    folder.mkdir(parents=True, exist_ok=True)
    base, files = _base(), {}

    def save(name, img, **kw):
        files[name] = folder / name
        img.save(files[name], **kw)

    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        stored = base.transpose(_INVERSE[o]) if o > 1 else base
        save(f"orient{o}.jpg", stored, exif=exif, quality=95)
    alpha = Image.linear_gradient("L").resize(base.size)
    rgba = base.copy()
    rgba.putalpha(alpha)
    save("rgba.png", rgba)
    save("la.png", Image.merge("LA", (base.convert("L"), alpha)))
    pal = base.quantize(16)
    save("palette.png", pal)
    save("palette_trns.png", pal, transparency=3)
    save("gray.png", base.convert("L"))
    save("gray.jpg", base.convert("L"), quality=95)
    save("rgb_key.png", base, transparency=tuple(int(v) for v in np.asarray(base)[0, 0]))
    deep = (np.asarray(base.convert("L"), np.uint16) * 257 + 128).astype(np.uint16)
    save("deep16.png", Image.fromarray(deep))  # I;16
    save("deep32.tif", Image.fromarray(deep.astype(np.int32)))  # I
    save("cmyk.jpg", base.convert("CMYK"), quality=95)
    save("cmyk.tif", base.convert("CMYK"))
    save("photo.webp", base, quality=90)
    save("photo.bmp", base)
    big = _base((960, 720), seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("big_rotated.jpg", big.transpose(_INVERSE[6]), exif=exif, quality=90)
    return files


@pytest.fixture(scope="module")
def mode_images(tmp_path_factory) -> dict[str, Path]:
    return write_mode_images(tmp_path_factory.mktemp("modes"))


# ---- what a mode becomes ---------------------------------------------------------------------------
def test_every_orientation_decodes_upright(mode_images):
    upright = np.asarray(images.open_rgb(mode_images["orient1.jpg"]), np.int16)
    for o in range(2, 9):
        got = np.asarray(images.open_rgb(mode_images[f"orient{o}.jpg"]), np.int16)
        assert got.shape == upright.shape, o
        assert np.abs(got - upright).mean() < 3, o  # JPEG noise only; a wrong turn is ~50


def test_transparency_is_composited_on_white_and_deep_images_scaled(mode_images):
    def px(name):
        return np.asarray(images.open_rgb(mode_images[name]), np.int16)

    rgb, a = np.asarray(_base(), np.int32), np.asarray(Image.linear_gradient("L").resize(_base().size), np.int32)
    expected = (rgb * a[..., None] + 255 * (255 - a[..., None]) + 127) // 255
    assert np.abs(px("rgba.png") - expected).max() <= 1
    assert (px("palette_trns.png")[np.asarray(Image.open(mode_images["palette_trns.png"])) == 3] == 255).all()
    assert (px("rgb_key.png")[0, 0] == 255).all()  # the colour key is transparent
    gray = np.asarray(_base().convert("L"), np.int16)
    for name in ("deep16.png", "deep32.tif"):
        assert np.abs(px(name)[..., 0] - gray).max() <= 1, name  # v*257+128 -> v, not clipped to 255
    assert np.abs(px("cmyk.tif") - np.asarray(_base().convert("CMYK").convert("RGB"), np.int16)).max() <= 1


def test_jpeg_draft_takes_the_smallest_scale_that_keeps_the_target(tmp_path):
    _base((1000, 600)).save(tmp_path / "wide.jpg", quality=90)
    _base((1000, 600)).save(tmp_path / "wide.png")
    for side, scale in ((55, 8), (75, 8), (76, 4), (150, 4), (151, 2), (300, 2), (301, 1), (600, 1)):
        w, h = images.open_rgb(tmp_path / "wide.jpg", min_side=side).size
        assert (w, h) == (-(-1000 // scale), -(-600 // scale)), side
        assert min(w, h) >= side
    assert images.open_rgb(tmp_path / "wide.png", min_side=55).size == (1000, 600)  # PNG as it is
    assert images.open_rgb(tmp_path / "wide.jpg").size == (1000, 600)  # no target: full size


def test_rotated_jpeg_is_reduced_by_its_shorter_side(mode_images):
    img = images.open_rgb(mode_images["big_rotated.jpg"], min_side=55)
    with Image.open(mode_images["big_rotated.jpg"]) as stored:
        assert stored.size == (720, 960)  # stored sideways
    assert img.size == (120, 90)  # 1/8 scale (90 >= 55 px on the shorter side), then turned upright
    assert images.open_rgb(mode_images["big_rotated.jpg"]).size == (960, 720)


def test_reduced_decode_is_close_to_full_decode_then_resize(mode_images, monkeypatch):
    reduced = PRE.to_array(PRE.load(mode_images["big_rotated.jpg"]))
    monkeypatch.setattr(images, "DCT_SCALING", False)
    full = PRE.to_array(PRE.load(mode_images["big_rotated.jpg"]))
    diff = np.abs(reduced - full) * np.asarray(PRE.std, np.float32)[:, None, None] * 255  # back to 8-bit levels
    assert diff.mean() < 2.0 and diff.max() < 40


# ---- the same pixels on every path -----------------------------------------------------------------
def _paths(f: Path, pre: Preprocess) -> dict[str, np.ndarray]:
    """The float32 CHW input of one file as each consumer computes it."""
    from tlexport.data.cache import ImageCache
    from tlexport.data.dataset import ImageDataset
    from tlexport.verify.inputs import load_images

    eval_tf = pre.eval_transform()
    cached = ImageDataset([(f, 0)], eval_tf, ImageCache("disk"))
    return {
        "predict": pre.to_array(pre.load(f)),
        "training val / evaluate": ImageDataset([(f, 0)], eval_tf)[0][0].numpy(),
        "cache miss": cached[0][0].numpy(),
        "cache hit": cached[0][0].numpy(),
        "parity": load_images([(f, 0)], pre, f.parent, "test").batch(0, 1)[0],
        "example apps": images.load_input(f, pre.to_dict()),
    }


def test_every_consumer_gets_the_same_pixels(mode_images):
    for name, f in mode_images.items():
        got = _paths(f, PRE)
        ref = got.pop("predict")
        assert ref.shape == (3, 48, 48)
        for where, x in got.items():
            assert x.shape == ref.shape and np.abs(x - ref).max() <= 1e-6, (name, where)


def test_training_transform_is_the_same_with_and_without_the_cache(mode_images):
    import torch

    from tlexport.data.cache import ImageCache
    from tlexport.data.dataset import ImageDataset

    tf = PRE.train_transform(True, 0.08)
    assert tf.side == 96  # 2 x the 48 px crop, above the 55 px resize
    samples = [(f, 0) for f in mode_images.values()]
    plain, cached = ImageDataset(samples, tf), ImageDataset(samples, tf, ImageCache("disk"))
    for i in range(len(samples)):
        outs = []
        for ds in (plain, cached, cached):  # without, filling, from the cache
            torch.manual_seed(i)
            outs.append(ds[i][0])
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]), samples[i][0].name
    arr = tf.prepare(mode_images["big_rotated.jpg"])
    assert arr.shape == (96, 128, 3)  # decoded at 1/4 (240x180), shrunk to the 96 px side


# ---- predict and the example apps ------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(fake_run, tmp_path_factory):
    return full_export(fake_run, tmp_path_factory)


def _edge_app():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location("edge_app", ROOT / "examples" / "edge_app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "examples"))


def predicted_probs(model: Path, folder: Path) -> dict[str, np.ndarray]:
    """{file name: probabilities in class order} from tlexport predict."""
    from tlexport.inference import predict

    result = predict(model, [folder], top_k=1000)
    assert not result.errors, result.errors
    out = {}
    for r in result.results:
        p = np.zeros(len(r["top"]))
        for t in r["top"]:
            p[t["index"]] = t["prob"]
        out[Path(r["image"]).name] = p
    return out


def test_onnx_example_app_gives_predicts_probabilities_in_every_mode(exported, mode_images):
    folder = next(iter(mode_images.values())).parent
    expected = predicted_probs(exported / "model.onnx", folder)
    assert set(expected) == {f.name for f in mode_images.values()}
    app = _edge_app()
    session, classes, pre = app.load_model(exported / "model.onnx")
    name = session.get_inputs()[0].name
    got = dict(app.probabilities(sorted(mode_images.values()), classes, pre,
                                 lambda x: session.run(None, {name: x})[0][0]))
    for f, probs in got.items():
        assert not isinstance(probs, str), (f, probs)
        assert np.abs(probs - expected[f.name]).max() < 1e-6, f.name
    # and the script itself, as an app runs it: the same top-3 labels, probabilities to 3 places
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "edge_app.py"), str(exported / "model.onnx"),
                        str(folder)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and not p.stderr, p.stderr
    printed = {Path(line.split(": ")[0]).name: line.split(": ")[1] for line in p.stdout.splitlines()}
    assert set(printed) == set(expected)
    for f, line in printed.items():
        order = np.argsort(-expected[f], kind="stable")[:3]
        assert line == ", ".join(f"{classes[i]} {expected[f][i]:.3f}" for i in order), f


def test_example_app_names_an_unreadable_file_and_classifies_the_rest(exported, tmp_path):
    _base().save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "edge_app.py"), str(exported / "model.onnx"),
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "broken.jpg: cannot read" in p.stderr and "ok.png: " in p.stdout and "Traceback" not in p.stderr


def test_images_module_can_be_vendored_alone(exported, mode_images, tmp_path):
    """images.py imports nothing of tlexport: an app copies it next to itself and, without
    tlexport importable, prints exactly what it prints with tlexport installed."""
    import ast
    import shutil

    tree = ast.parse((ROOT / "tlexport" / "data" / "images.py").read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "io", "warnings", "pathlib", "numpy", "PIL"}, roots
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(ROOT / "examples" / "edge_app.py", app)
    shutil.copy(ROOT / "tlexport" / "data" / "images.py", app)
    folder = next(iter(mode_images.values())).parent
    args = [str(exported / "model.onnx"), str(folder)]
    blocked = ("import runpy, sys; sys.modules['tlexport'] = None; sys.path.insert(0, sys.argv[1]); "
               "sys.argv = ['edge_app.py'] + sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    alone = subprocess.run([sys.executable, "-c", blocked, str(app), *args], capture_output=True, text=True,
                           timeout=120, cwd=app)
    installed = subprocess.run([sys.executable, str(ROOT / "examples" / "edge_app.py"), *args], capture_output=True,
                               text=True, timeout=120)
    assert alone.returncode == 0 and installed.returncode == 0, alone.stderr + installed.stderr
    assert alone.stdout == installed.stdout and len(alone.stdout.splitlines()) == len(mode_images)


def test_examples_keep_no_decoding_of_their_own():
    """The examples decode only through tlexport/data/images.py (and python_api through predict)."""
    for script in ("edge_app.py", "edge_litert.py", "edge_executorch.py", "python_api.py"):
        text = (ROOT / "examples" / script).read_text()
        for divergent in ("Image.open", "exif_transpose", '.convert("RGB")', ".resize(", "def preprocess"):
            assert divergent not in text, (script, divergent)
