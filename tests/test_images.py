"""Image decoding: modes become correct RGB, broken files are told apart with a reason."""

import numpy as np
import pytest
from PIL import Image

from tlexport.data import images
from tlexport.data.images import BadImage, load_rgb


def test_grayscale_palette_rgba_cmyk_16bit_become_rgb(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    pal = Image.new("P", (8, 8))
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "pal.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "deep.png")
    got = {p.stem: np.asarray(load_rgb(p)) for p in tmp_path.iterdir()}
    assert all(a.shape == (8, 8, 3) and a.dtype == np.uint8 for a in got.values())
    assert (got["gray"] == 100).all()
    assert (got["pal"][0, 0] == [10, 20, 30]).all()
    assert (got["clear"] == 255).all()  # transparent pixels composite onto white, not black
    assert (got["cmyk"] == 255).all()
    assert (got["deep"] == 255).all()  # 16-bit white stays white instead of clipping garbage


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (10, 20)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.jpg", b"", "empty"),
    ("text.png", b"definitely not an image" * 10, "not an image"),
])
def test_broken_files_have_reasons(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_rgb(tmp_path / name)


def test_truncated_and_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage):
        load_rgb(tmp_path / "cut.jpg")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(tmp_path / "ok.jpg")
