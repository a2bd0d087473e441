"""The validity scan at scale: parallel processes, progress, verdicts remembered between runs
(and invalidated when a file changes), today's reasons and header checks kept."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from tlexport.data import check
from tlexport.data.folders import scan
from tlexport.data.preprocess import Preprocess


def _img(path, color=(200, 10, 10), size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _folder(root, per_class=40):
    """2 classes of `per_class` images in train/ + val/, a broken file and an extreme strip."""
    for c, color in (("a", (200, 10, 10)), ("b", (10, 200, 10))):
        for i in range(per_class):
            _img(root / "train" / c / f"{i}.png", color)
        _img(root / "val" / c / "0.png", color)
    (root / "train" / "a" / "empty.jpg").write_bytes(b"")
    (root / "train" / "b" / "fake.png").write_bytes(b"<html>nope</html>")
    _img(root / "train" / "a" / "strip.png", size=(20000, 2))
    return root


class Calls:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))


def test_second_scan_decodes_nothing_and_gives_the_same_result(tmp_path):
    root, pre = _folder(tmp_path / "data"), Preprocess(56, 48)
    first_calls, second_calls = Calls(), Calls()
    first = scan(root, check_size=pre.check_size, progress=first_calls)
    second = scan(root, check_size=pre.check_size, progress=second_calls)
    n = 2 * 41 + 3
    assert first_calls.calls[0] == (0, n) and first_calls.calls[-1] == (n, n)
    assert [d for d, _ in first_calls.calls] == sorted(d for d, _ in first_calls.calls)
    assert second_calls.calls == [] and second.remembered == n and first.remembered == 0
    assert (second.train, second.val, second.skipped) == (first.train, first.val, first.skipped)
    reasons = {p.name: r for p, r in first.skipped}
    assert reasons["empty.jpg"] == "empty file" and reasons["fake.png"] == "not an image"
    assert reasons["strip.png"].startswith("extreme aspect ratio")
    assert set(first.digests) == {str(p) for p, _ in first.train + first.val}


def test_a_changed_or_new_file_is_decoded_again(tmp_path):
    root = _folder(tmp_path / "data")
    scan(root)
    target = root / "train" / "a" / "3.png"
    target.write_bytes(b"broken now")
    _img(root / "train" / "b" / "new.png")
    calls = Calls()
    s = scan(root, progress=calls)
    assert calls.calls[-1] == (2, 2)  # the changed file and the new one, nothing else
    assert (target, "not an image") in s.skipped
    assert (root / "train" / "b" / "new.png", 1) in s.train


def test_refused_by_the_size_bound_is_judged_again_with_another_bound(tmp_path):
    root = _folder(tmp_path / "data", per_class=2)
    strip = root / "train" / "a" / "strip.png"
    assert strip in {p for p, _ in scan(root, check_size=Preprocess(56, 48).check_size).skipped}
    calls = Calls()
    s = scan(root, progress=calls)  # no bound: the strip is decoded now, and accepted
    assert calls.calls[-1] == (1, 1) and (strip, 0) in s.train


def test_a_bad_memory_file_is_ignored(tmp_path):
    root = _folder(tmp_path / "data", per_class=2)
    expected = scan(root)
    memory = check.ScanMemory(root)
    for text in ("not json", json.dumps({"format": "tlexport-scan", "version": 1, "root": str(memory.root),
                                         "files": {"train/a/0.png": ["x"] * 8}}), "[" * 100000):
        memory.path.write_text(text)
        calls = Calls()
        s = scan(root, progress=calls)
        assert calls.calls and calls.calls[-1][0] == calls.calls[-1][1] > 0
        assert (s.train, s.val, s.skipped) == (expected.train, expected.val, expected.skipped)
    rows = json.loads(memory.path.read_text())["files"]
    assert all(check._valid_row(v) for v in rows.values()) and len(rows) == 2 * 3 + 3


def test_an_oversized_memory_file_is_not_read(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", per_class=2)
    scan(root)
    monkeypatch.setattr(check, "MAX_MEMORY_BYTES", 100)
    calls = Calls()
    scan(root, progress=calls)
    assert calls.calls[-1] == (9, 9)


def test_parallel_check_matches_the_serial_one_and_uses_processes(tmp_path, monkeypatch):
    import subprocess
    import sys

    root = _folder(tmp_path / "data", per_class=40)
    samples = [(p, 0) for p in sorted((root / "train").rglob("*.*"))]
    assert len(samples) >= check.POOL_MIN
    serial = check.check(samples, Preprocess(56, 48).check_size, workers=1)
    # in a fresh interpreter, as `tlexport train` starts: no other thread, so the pool forks
    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "from tlexport.data import check\n"
            "from tlexport.data.preprocess import Preprocess\n"
            "made, pool = [], check._pool\n"
            "check._pool = lambda *a: made.append(pool(*a)) or made[-1]\n"
            "samples = [(Path(p), 0) for p in json.loads(sys.argv[1])]\n"
            "r = check.check(samples, Preprocess(56, 48).check_size, workers=2)\n"
            "print(json.dumps({'pool': type(made[0]).__name__, 'good': [str(p) for p, _ in r.good],\n"
            "                  'bad': [[str(p), why] for p, why in r.bad], 'digests': r.digests}))\n")
    p = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p, _ in samples])],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    parallel = json.loads(p.stdout)
    assert parallel["pool"] == "ProcessPoolExecutor"
    assert parallel["good"] == [str(p) for p, _ in serial.good]
    assert parallel["bad"] == [[str(p), why] for p, why in serial.bad]
    assert parallel["digests"] == {k: list(v) for k, v in serial.digests.items()}
    pool = check._pool
    assert isinstance(pool(len(samples), 2, lambda w, h: None), ThreadPoolExecutor)  # a lambda cannot travel
    assert pool(check.POOL_MIN - 1, 2, None) is None
    monkeypatch.setattr(check.threading, "active_count", lambda: 2)  # a live thread: no fork
    assert isinstance(pool(len(samples), 2, Preprocess(56, 48).check_size), ThreadPoolExecutor)


def test_memory_is_in_the_cache_folder_not_the_data_folder(tmp_path):
    root = _folder(tmp_path / "data", per_class=2)
    scan(root)
    cache = os.environ["TLEXPORT_CACHE_DIR"]
    assert list((tmp_path / "data").rglob("*.json")) == []
    assert check.ScanMemory(root).path.is_relative_to(cache) and check.ScanMemory(root).path.is_file()


def test_remember_false_neither_reads_nor_writes(tmp_path):
    root = _folder(tmp_path / "data", per_class=2)
    scan(root, remember=False)
    assert not check.ScanMemory(root).path.exists()
    scan(root)
    calls = Calls()
    scan(root, remember=False, progress=calls)
    assert calls.calls[-1] == (9, 9)


def test_resume_uses_the_remembered_verdicts(tmp_path):
    from tlexport.data.folders import from_record

    root = _folder(tmp_path / "data", per_class=3)
    s = scan(root)
    calls = Calls()
    again, notes = from_record(s.split_record(), s.classes, root, progress=calls)
    assert calls.calls == [] and again.remembered == len(s.train) + len(s.val)
    assert (again.train, again.val) == (s.train, s.val) and set(again.digests) == set(s.digests)


def test_a_truncated_jpeg_is_found_at_the_smallest_scale(tmp_path):
    big = tmp_path / "big.jpg"
    Image.effect_noise((800, 600), 60).convert("RGB").save(big, quality=90)
    data = big.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    assert check.probe(str(big))[5] == "ok"
    row = check.probe(str(tmp_path / "cut.jpg"))
    assert row[5] == "bad" and row[6] == "truncated"
