"""The training image cache: where it lives, what an entry holds, reuse across epochs / runs /
processes, invalidation, torn entries, memory mode, and `tlexport cache` / `train --data-cache`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tlexport.cli import cli
from tlexport.data import cache as C
from tlexport.data.dataset import ImageDataset
from tlexport.data.preprocess import Preprocess
from tlexport.data.transforms import EvalTransform, TrainTransform

PRE = Preprocess(56, 48)


def _photo(path: Path, seed: int = 0, size=(300, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)).resize(size).save(
        path, quality=90)
    return path


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(tmp_path / "mine"))
    assert C.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TLEXPORT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "tlexport"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.cache_dir() == tmp_path / "home" / ".cache" / "tlexport"


class NoDecode:
    """Stands in for `prepare` once the cache is filled: any decode fails the test."""

    def __init__(self, transform):
        self.transform = transform

    def __getattr__(self, name):
        return getattr(self.transform, name)

    def prepare(self, source):
        raise AssertionError(f"decoded {source} although it is cached")


def test_entries_are_reused_by_a_new_process_and_hold_the_prepared_pixels(tmp_path):
    f = _photo(tmp_path / "data" / "x.jpg")
    for tf in (EvalTransform(PRE), TrainTransform(PRE)):
        first = C.ImageCache("disk")
        arr = first.fetch(f, tf)
        assert np.array_equal(arr, tf.prepare(f))
        again = C.ImageCache("disk")  # a new run, rank or worker: no digests, hashes the bytes
        assert np.array_equal(again.fetch(f, NoDecode(tf)), arr)
    entries = [p for p in (C.cache_dir() / "images").rglob("*") if p.is_file() and p.name != C.MARKER]
    assert len(entries) == 2 and not any(p.name.startswith(".") for p in entries)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["x.jpg"]  # nothing written beside the image


def test_a_changed_file_misses_and_a_torn_entry_is_rewritten(tmp_path):
    f = _photo(tmp_path / "x.jpg", seed=0)
    cache, tf = C.ImageCache("disk"), EvalTransform(PRE)
    old = cache.fetch(f, tf)
    _photo(f, seed=1)
    new = cache.fetch(f, tf)
    assert not np.array_equal(old, new) and np.array_equal(new, tf.prepare(f))
    entry = cache.entry_path(cache.key(cache.digests[str(f)][3], tf.variant))
    entry.write_bytes(entry.read_bytes()[:-10])  # a crash mid-write on a filesystem without rename order
    fresh = C.ImageCache("disk")
    assert np.array_equal(fresh.fetch(f, tf), new)
    assert C._read_entry(entry.open("rb")).shape == new.shape  # rewritten whole


def test_digests_from_the_scan_avoid_reading_the_file(tmp_path, monkeypatch):
    from tlexport.data.folders import scan

    for c in ("a", "b"):
        for i in range(2):
            _photo(tmp_path / "data" / "train" / c / f"{i}.jpg", seed=i)
        _photo(tmp_path / "data" / "val" / c / "0.jpg")
    s = scan(tmp_path / "data")
    cache = C.ImageCache("disk", s.digests)
    ds = ImageDataset(s.train, EvalTransform(PRE), cache)
    filled = [ds[i][0] for i in range(len(ds))]
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self}"))
    cached = ImageDataset(s.train, NoDecode(EvalTransform(PRE)), cache)
    assert all(np.array_equal(a, cached[i][0]) for i, a in enumerate(filled))


def test_memory_mode_writes_nothing_and_keeps_within_its_budget(tmp_path):
    files = [_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    cache, tf = C.ImageCache("memory"), EvalTransform(PRE)
    cache.memory_budget = 2 * 48 * 48 * 3
    for f in files:
        cache.fetch(f, tf)
    assert len(cache.memory) == 2 and "full" in cache.note
    assert np.array_equal(cache.fetch(files[0], NoDecode(tf)), tf.prepare(files[0]))
    assert not (C.cache_dir() / "images").exists()


def test_an_unwritable_cache_folder_only_means_decoding(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(blocker))  # a file where the folder should be
    f = _photo(tmp_path / "x.jpg")
    cache = C.ImageCache("disk")
    assert np.array_equal(cache.fetch(f, EvalTransform(PRE)), EvalTransform(PRE).prepare(f))
    assert "cannot use" in cache.note


def test_a_full_disk_stops_adding(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "MIN_FREE_BYTES", 1 << 62)
    cache = C.ImageCache("disk")
    cache.fetch(_photo(tmp_path / "x.jpg"), EvalTransform(PRE))
    assert not any(p.is_file() and p.name != C.MARKER for p in (C.cache_dir() / "images").rglob("*"))
    assert "GiB free" in cache.note


def test_cache_command_shows_and_clears(tmp_path):
    cache = C.ImageCache("disk")
    cache.fetch(_photo(tmp_path / "x.jpg"), EvalTransform(PRE))
    r = CliRunner().invoke(cli, ["cache", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["directory"] == os.environ["TLEXPORT_CACHE_DIR"] and info["image_entries"] == 1
    assert info["image_bytes"] == 16 + 48 * 48 * 3
    r = CliRunner().invoke(cli, ["cache"])
    assert r.exit_code == 0 and "1 cached training images" in r.stdout, r.output
    r = CliRunner().invoke(cli, ["cache", "--clear"])
    assert r.exit_code == 0 and "removed" in r.stdout, r.output
    assert C.cache_info().image_entries == 0


# ---- through `tlexport train` -------------------------------------------------------------------
def _train(data, out, *extra):
    return CliRunner().invoke(cli, ["train", "--data", str(data), "--arch", "resnet18", "--weights", "none",
                                    "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0",
                                    "--max-steps", "2", "--out", str(out), "--quiet", *extra])


def test_a_second_run_on_the_same_data_decodes_nothing(tiny_data, tmp_path, monkeypatch):
    r = _train(tiny_data, tmp_path / "run1")
    assert r.exit_code == 0, r.output
    n = C.cache_info().image_entries
    assert n > 0
    import tlexport.data.images as images

    def no_decode(*a, **k):
        raise AssertionError("decoded an image in a run whose data is cached and remembered")

    monkeypatch.setattr(images, "open_rgb", no_decode)
    monkeypatch.setattr(EvalTransform, "prepare", no_decode)
    monkeypatch.setattr(TrainTransform, "prepare", no_decode)
    r = _train(tiny_data, tmp_path / "run2")
    assert r.exit_code == 0, r.output
    assert C.cache_info().image_entries == n


def test_data_cache_off_writes_no_images(tiny_data, tmp_path):
    r = _train(tiny_data, tmp_path / "run", "--data-cache", "off")
    assert r.exit_code == 0, r.output
    assert C.cache_info().image_entries == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["options"]["data_cache"] == "off"
    r = _train(tiny_data, tmp_path / "run2", "--data-cache", "sometimes")
    assert r.exit_code == 2 and "--data-cache" in r.output
