"""Never a slower int8 in silence (#20.2): export times the verified files of each CPU runtime
against each other, records both in the manifest, names the fastest file per runtime, and says in
one line when int8 is not faster; `tables.fastest.fastest_file` picks that file for a runtime.

The decisions are tested with an injected timer (`exporters.speed.time_files` replaced by one that
returns fixed numbers), so nothing here depends on how fast this machine is."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.exporters import speed
from tlexport.tables.fastest import fastest_file


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def fake_timer(ms_by_runtime: dict, load: float | None = 0.0, calls: list | None = None):
    """A `time_files` that answers ms_by_runtime[runtime][precision] without timing anything; a
    runtime not named (OpenCV, where its DNN is installed) answers int8 faster, which adds no note."""

    def time_files(runtime, files, crop):
        if calls is not None:
            calls.append((runtime, [p.name for p, _ in files], crop))
        ms = ms_by_runtime.get(runtime, {"fp32": 5.0, "int8": 1.0})
        return {"ms": [ms[precision] for _, precision in files], "rounds": 3,
                "competing_load": load}

    return time_files


@pytest.fixture(scope="module")
def timed_export(fake_run, tmp_path_factory):
    """fp32 + int8 ONNX where int8 is slower on onnxruntime and faster on OpenVINO (fixed numbers)."""
    mp = pytest.MonkeyPatch()
    calls = []
    mp.setattr(speed, "time_files", fake_timer({"onnxruntime": {"fp32": 5.0, "int8": 10.0},
                                                "openvino": {"fp32": 5.0, "int8": 2.0},
                                                "opencv": {"fp32": 7.0, "int8": 6.0}}, calls=calls))
    out = tmp_path_factory.mktemp("timed") / "export"
    try:
        r = invoke("export", fake_run, "--precision", "fp32,int8", "--int8-fallback", "none", "--calib-size", "8",
                   "--out", out)
    finally:
        mp.undo()
    return out, r, calls


def test_export_records_both_timings_and_the_fastest_file_per_runtime(timed_export):
    out, r, calls = timed_export
    assert r.exit_code == 0, r.output
    timed = sorted(rt for rt, _, _ in calls)  # OpenCV too where its DNN is here and runs int8 QDQ
    assert timed in (["onnxruntime", "openvino"], ["onnxruntime", "opencv", "openvino"]), timed
    assert all(files == ["model.onnx", "model.int8.onnx"] and crop == 48 for _, files, crop in calls)
    m = json.loads((out / "manifest.json").read_text())
    assert {k: m["fastest"][k] for k in ("onnxruntime", "openvino")} == {"onnxruntime": "model.onnx",
                                                                          "openvino": "model.int8.onnx"}
    if "opencv" in timed:
        assert m["fastest"]["opencv"] == "model.int8.onnx"
    speeds = {a["file"]: a["speed"] for a in m["artifacts"]}
    assert {k: speeds["model.onnx"][k] for k in ("onnxruntime", "openvino")} == {
        "onnxruntime": {"p50_ms": 5.0, "batch": 1}, "openvino": {"p50_ms": 5.0, "batch": 1}}
    assert speeds["model.int8.onnx"]["onnxruntime"]["p50_ms"] == 10.0
    assert m["timing"]["runtimes"]["onnxruntime"] == {"rounds": 3, "noisy": False, "competing_load": 0.0}


def test_a_slower_int8_is_said_in_one_line_per_runtime(timed_export):
    out, r, _ = timed_export
    lines = [line for line in r.output.splitlines() if "int8 is not faster" in line]
    assert lines == ["note: int8 is not faster than fp32 on onnxruntime here (model.int8.onnx 10.00 ms, model.onnx "
                     "5.00 ms at batch 1): the manifest names model.onnx as its fastest file"]


def test_fastest_file_picks_the_timed_winner_for_each_runtime(timed_export):
    out, _, _ = timed_export
    assert fastest_file(out, "onnxruntime") == out / "model.onnx"
    assert fastest_file(out, "openvino") == out / "model.int8.onnx"
    assert fastest_file(out, "litert") is None  # nothing timed for it
    assert fastest_file(out.parent / "no-such-folder") is None


@pytest.mark.parametrize("tamper, expected", [
    (lambda a: a.update(verified=False), "model.onnx"),  # an unverified file is never picked
    (lambda a: a["speed"]["onnxruntime"].update(p50_ms="fast"), "model.onnx"),
    (lambda a: a["speed"]["onnxruntime"].update(p50_ms=-1.0), "model.onnx"),
    (lambda a: a["speed"].update(onnxruntime=None), "model.onnx"),
    (lambda a: a.update(file="../model.int8.onnx"), "model.onnx"),  # outside the folder: not opened
])
def test_fastest_file_passes_over_rows_it_cannot_trust(timed_export, tmp_path, tamper, expected):
    """The int8 row is made the fastest on onnxruntime, then broken one way: the picker falls back
    to the next timed, verified file."""
    import shutil

    out, _, _ = timed_export
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    int8 = next(a for a in m["artifacts"] if a["file"] == "model.int8.onnx")
    int8["speed"]["onnxruntime"]["p50_ms"] = 1.0
    (copy / "manifest.json").write_text(json.dumps(m))
    assert fastest_file(copy, "onnxruntime") == copy / "model.int8.onnx"
    tamper(int8)
    (copy / "manifest.json").write_text(json.dumps(m))
    assert fastest_file(copy, "onnxruntime") == copy / expected


def test_a_busy_machine_is_named_and_a_faster_int8_says_nothing(fake_run, tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "time_files", fake_timer({"onnxruntime": {"fp32": 5.0, "int8": 5.0},
                                                         "openvino": {"fp32": 5.0, "int8": 1.0}}, load=1.7))
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--precision", "fp32,int8", "--int8-fallback", "none", "--calib-size", "8",
               "--out", out, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    (note,) = result["notes"]  # a tie is "not faster"; OpenVINO's faster int8 needs no line
    assert note.startswith("int8 is not faster than fp32 on onnxruntime here") and "the timing is noisy" in note
    assert result["fastest"]["openvino"] == "model.int8.onnx"
    timing = json.loads((out / "manifest.json").read_text())["timing"]["runtimes"]
    assert timing["onnxruntime"]["noisy"] is True and timing["onnxruntime"]["competing_load"] == 1.7


def test_unverified_exports_are_not_timed(fake_run, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(speed, "time_files", fake_timer({}, calls=calls))
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--precision", "fp32,int8", "--int8-fallback", "none", "--calib-size", "8",
               "--out", out, "--no-verify")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert calls == [] and m["fastest"] == {} and m["timing"] == {"skipped": "--no-verify"}
    assert fastest_file(out) is None


def test_the_real_timer_measures_every_file_it_is_given(timed_export):
    """What the real measurement returns, not how fast anything is: one positive finite median per
    file, in order, and the rounds it ran within its bounds."""
    out, _, _ = timed_export
    got = speed.time_files("onnxruntime", [(out / "model.onnx", "fp32"), (out / "model.int8.onnx", "int8")], 48)
    assert len(got["ms"]) == 2 and all(math.isfinite(x) and x > 0 for x in got["ms"])
    assert speed.MIN_ROUNDS <= got["rounds"] <= speed.MAX_ROUNDS
    assert got["competing_load"] is None or got["competing_load"] >= 0


def test_predict_on_an_export_folder_runs_its_fastest_verified_file(fake_run, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "time_files", fake_timer({"onnxruntime": {"fp32": 5.0, "int8": 1.0},
                                                         "openvino": {"fp32": 5.0, "int8": 1.0}}))
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--precision", "fp32,int8", "--int8-fallback", "none", "--calib-size", "8",
               "--out", out)
    assert r.exit_code == 0, r.output
    images = tiny_data / "val"

    def probs(model):
        got = invoke("predict", model, images, "--json", "--top-k", "3")
        assert got.exit_code == 0, got.output
        return {x["image"]: [t["prob"] for t in x["top"]] for x in json.loads(got.stdout)}

    folder, int8, fp32 = probs(out), probs(out / "model.int8.onnx"), probs(out / "model.onnx")
    assert not all(np.allclose(int8[k], fp32[k], rtol=0, atol=1e-7) for k in int8)  # the two files differ
    assert folder == int8


def test_runtimes_that_start_a_program_per_load_are_not_timed_at_export(monkeypatch):
    """The browser runs .onnx files too, but a headless Chromium per load is not what export should
    spend its time on: candidates leaves it out even where it is available; bench times it."""
    from tlexport.exporters.job import Artifact
    from tlexport.formats.web.runtime import BrowserRuntime

    monkeypatch.setattr(BrowserRuntime, "unavailable_reason", classmethod(lambda cls, device, precision: None))
    arts = [Artifact(f, "onnx", p, devices=["cpu"], verified=True, sha256=f) for f, p in
            (("model.onnx", "fp32"), ("model.int8.onnx", "int8"))]
    found = speed.candidates(arts)
    assert "browser" not in found and [a.file for a in found["onnxruntime"]] == ["model.onnx", "model.int8.onnx"]


def test_each_file_settles_before_its_timed_calls(monkeypatch):
    """Timed right after another session ran, a file pays that session's spinning threads and cold
    caches: every turn of a file in a round starts with untimed calls, and only the others count."""
    import tlexport.runtimes as runtimes

    log = []

    class Fake:
        def __init__(self, path, precision, device, threads=None):
            self.name = path.name

        def load(self):
            return self

        def run(self, x):
            log.append(self.name)

        def close(self):
            pass

    monkeypatch.setattr(runtimes, "runtime_class", lambda name: Fake)
    from pathlib import Path

    got = speed.time_files("onnxruntime", [(Path("a.onnx"), "fp32"), (Path("b.onnx"), "int8")], 8,
                           min_rounds=2, max_rounds=2, calls=3)
    assert [len(t) for t in got["times_ms"]] == [6, 6]
    turn = ["a.onnx"] * (speed.SETTLE_CALLS + 3) + ["b.onnx"] * (speed.SETTLE_CALLS + 3)
    assert log == ["a.onnx"] * speed.WARMUP_CALLS + ["b.onnx"] * speed.WARMUP_CALLS + turn * 2
