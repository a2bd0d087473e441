"""Scanning folders: layouts, hidden folders, broken files, stratified split, clear errors."""

import pytest
from PIL import Image

from tlexport.data.folders import scan
from tlexport.errors import DataError, MissingInput


def _img(path, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)


def test_flat_layout_is_split_stratified_and_seeded(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _img(tmp_path / c / f"{i}.png")
    _img(tmp_path / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    s = scan(tmp_path, val_fraction=0.2, seed=1)
    assert s.classes == ["a", "b"] and s.layout == "flat"
    assert [y for _, y in s.val].count(0) == 2 and [y for _, y in s.val].count(1) == 2
    assert len(s.train) == 16
    assert scan(tmp_path, val_fraction=0.2, seed=1).val == s.val
    assert scan(tmp_path, val_fraction=0.2, seed=2).val != s.val


def test_broken_files_are_skipped_with_reasons(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            _img(tmp_path / "train" / c / f"{i}.jpg")
        _img(tmp_path / "val" / c / "0.jpg")
    (tmp_path / "train" / "a" / "empty.jpg").write_bytes(b"")
    (tmp_path / "train" / "b" / "fake.png").write_bytes(b"<html>nope</html>")
    s = scan(tmp_path)
    reasons = {p.name: r for p, r in s.skipped}
    assert reasons == {"empty.jpg": "empty file", "fake.png": "not an image"}
    assert len(s.train) == 6 and len(s.val) == 2


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "no class folders"),
    (lambda d: _img(d / "only" / "0.png"), "only one class"),
    (lambda d: (_img(d / "a" / "0.png"), (d / "b").mkdir()), "without valid images"),
])
def test_layout_errors(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        scan(tmp_path)


def test_missing_folder(tmp_path):
    """A data folder that is not there is a mistake in the command line (exit 2), not bad data."""
    with pytest.raises(MissingInput, match="does not exist"):
        scan(tmp_path / "nope")
