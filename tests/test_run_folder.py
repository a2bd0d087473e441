"""The run folder's one owner (tlexport.run) and what a careful user trips over around it: damaged
run files read with one bounded reader and one error per problem, output folders inside the data
refused before anything is created, no created parent left behind, a live run reported as live
(its lock is taken before the folder is judged), and bad numbers as bad usage (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.run import RunDir, RunError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(r, code: int, *words, alone: bool = True) -> str:
    """The error line (the output's only line, or with `alone=False` its last, after progress)."""
    assert r.exit_code == code, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert (len(lines) == 1 or not alone) and lines[-1].startswith("Error:") and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[-1], r.output
    return lines[-1]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def run_copy(tmp_path, fake_run):
    out = tmp_path / "run"
    shutil.copytree(fake_run, out)
    return out


# ---- one reader, one error per problem ------------------------------------------------------------
@pytest.mark.parametrize("text,words", [
    ("[" * 100_000, "nested too deeply"),
    ('{"a":' * 40 + "1" + "}" * 40, "nested too deeply"),
    ("[1, 2]", "is not a JSON object"),
    ('{"arch": 3, "classes": ["a", "b"], "preprocess": {}}', "'arch' must be an architecture name"),
    ('{"arch": "resnet18", "classes": ["a", "a"], "preprocess": {}}', "'classes' must be a list of distinct"),
    ('{"arch": "resnet18", "classes": ["a", "b"]}', "'preprocess' must be an object"),
    ("{not json", "is not valid JSON"),
])
def test_a_damaged_run_json_is_the_same_one_line_error_for_every_command(run_copy, tmp_path, text, words):
    (run_copy / "run.json").write_text(text)
    for args in (["eval", run_copy], ["train", "--resume", run_copy],
                 ["export", run_copy, "--format", "onnx", "--out", tmp_path / "exp"]):
        one_line(invoke(*args), 1, str(run_copy / "run.json"), words)
    assert not (tmp_path / "exp").exists()


def test_oversized_run_json_is_refused_before_it_is_read(run_copy):
    with open(run_copy / "run.json", "wb") as f:
        f.truncate((16 << 20) + 1)
    with pytest.raises(RunError, match="too large"):
        RunDir(run_copy).read_meta()


def test_missing_folder_and_non_run_say_so_alike(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["eval", tmp_path / "nope"], ["train", "--resume", tmp_path / "nope"]):
        one_line(invoke(*args), 2, f"run folder {tmp_path / 'nope'} does not exist")
    for args in (["eval", tmp_path / "empty"], ["train", "--resume", tmp_path / "empty"]):
        one_line(invoke(*args), 2, "is not a tlexport run (no run.json)")
    assert tree(tmp_path) == ["empty"]  # resume took the lock of an existing folder, and left nothing


@pytest.mark.parametrize("row", [["../outside.png", 0], ["/etc/passwd", 0], ["a.png", -1], ["a.png", "0"]])
def test_split_json_rows_must_stay_inside_the_data_folder(run_copy, row):
    record = json.loads((run_copy / "split.json").read_text())
    record["val"].append(row)
    (run_copy / "split.json").write_text(json.dumps(record))
    one_line(invoke("eval", run_copy), 1, "split.json is damaged: 'val' must be a list of [relative path, label]")


# ---- output folders and the data (#22 item 1) -------------------------------------------------------
def test_out_inside_data_is_refused_before_anything_is_created(tmp_path, tiny_data):
    data = tmp_path / "photos"
    shutil.copytree(tiny_data, data)
    before = tree(data)
    one_line(invoke("train", "--data", data, *TINY, "--out", data / "runs" / "r1"), 2,
             "is inside --data", "class folder")
    one_line(invoke("train", "--data", data / "train", *TINY, "--out", data / "train"), 2, "is inside --data")
    one_line(invoke("lr-find", "--data", data, *TINY, "--out", data / "lr"), 2, "is inside --data")
    one_line(invoke("train", "--data", data, *TINY, "--nproc", 2, "--out", data / "r"), 2, "is inside --data")
    assert tree(data) == before


def test_default_run_folder_inside_the_data_is_refused_too(tmp_path, tiny_data, monkeypatch):
    data = tmp_path / "photos"
    shutil.copytree(tiny_data, data)
    monkeypatch.chdir(data)  # runs/<arch>-<time> would land in the data folder
    one_line(invoke("train", "--data", ".", *TINY), 2, "is inside --data")
    assert not (data / "runs").exists()


def test_data_inside_a_run_folder_is_refused(tmp_path, run_copy, tiny_data):
    shutil.copytree(tiny_data, run_copy / "photos")
    one_line(invoke("train", "--data", run_copy / "photos", *TINY, "--out", tmp_path / "new"), 2,
             f"inside the run folder {run_copy}")
    one_line(invoke("train", "--data", run_copy / "photos", *TINY, "--out", run_copy), 2, "is inside --out")
    assert not (tmp_path / "new").exists()


def test_a_failed_train_leaves_no_created_parent_behind(tmp_path):
    from tlexport.data.synth import make_dataset

    data = make_dataset(tmp_path / "one", classes=("circle",), per_class=3, size=32)  # one class: a DataError
    one_line(invoke("train", "--data", data, *TINY, "--out", tmp_path / "a" / "b" / "run", "--quiet"), 1,
             "only one class")
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()  # an existing parent stays
    one_line(invoke("train", "--data", data, *TINY, "--out", tmp_path / "kept" / "x" / "run", "--quiet"), 1,
             "only one class")
    assert tree(tmp_path / "kept") == []


def test_eval_out_inside_the_data_it_reads_is_refused(run_copy, tiny_data):
    one_line(invoke("eval", run_copy, "--data", tiny_data / "val", "--out", tiny_data / "val" / "eval"), 2,
             "is inside --data")
    record = json.loads((run_copy / "split.json").read_text())  # the run's own val split
    one_line(invoke("eval", run_copy, "--out", Path(record["root"]) / "eval"), 2, "is inside --data")
    assert not (tiny_data / "val" / "eval").exists() and not (Path(record["root"]) / "eval").exists()


def test_a_failed_quickstart_removes_what_it_wrote(tmp_path, monkeypatch):
    from tlexport.errors import DataError
    from tlexport.training import loop

    def broken(cfg, progress=None, overwrite=False):
        assert Path(cfg.data).is_dir()  # the images were generated
        raise DataError("simulated failure")

    monkeypatch.setattr(loop, "train", broken)
    one_line(invoke("quickstart", "--out", tmp_path / "qs" / "inner", "--epochs", 1), 1, "simulated failure",
             alone=False)
    assert not (tmp_path / "qs").exists()
    (tmp_path / "empty").mkdir()
    one_line(invoke("quickstart", "--out", tmp_path / "empty", "--epochs", 1), 1, "simulated failure", alone=False)
    assert tree(tmp_path / "empty") == []  # and a second quickstart is not refused as "not empty"


# ---- a live run is live (#22 item 3) -------------------------------------------------------------------
HOLD = ("import sys, tlexport.training.session as s\n"
        "real = s.Session.loop\n"
        "def held(self):\n"
        "    open(sys.argv[-1], 'w').close()\n"  # the start files are written, no checkpoint yet
        "    sys.stdin.read()\n"
        "    return real(self)\n"
        "s.Session.loop = held\n")


def test_a_live_run_before_its_first_checkpoint_is_reported_live_not_dead(tmp_path, tiny_data):
    out, marker = tmp_path / "run", tmp_path / "started"
    args = ["train", "--data", str(tiny_data), *TINY, "--epochs", "1", "--max-steps", "1", "--out", str(out),
            "--quiet"]
    code = HOLD + f"from tlexport.cli import cli\ncli.main({args!r}, standalone_mode=True)\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "th"))
    child = subprocess.Popen([sys.executable, "-c", code, str(marker)], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.stderr.read() if child.poll() is not None else "timed out"
        assert (out / "run.json").is_file() and not (out / "checkpoint.pt").exists()
        live = f"being written by another tlexport training run (pid {child.pid} "
        for extra in ([], ["--overwrite"], ["--nproc", "2"]):
            line = one_line(invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--out", out, *extra), 1, live)
            assert "--overwrite" not in line and "stopped before" not in line
        one_line(invoke("train", "--resume", out), 1, live)
        assert (out / "run.json").is_file() and (out / "split.json").is_file()  # nothing of the live run replaced
        _, err = child.communicate("go\n", timeout=300)
        assert child.returncode == 0, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert (out / "checkpoint.pt").is_file()


# ---- numbers: bad usage is exit 2 (#22 item 6) -----------------------------------------------------------
@pytest.mark.parametrize("args,words", [
    (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1), got 1.5"),
    (["--val-fraction", "0"], "--val-fraction must be in (0, 1)"),
    (["--momentum", "-1"], "--momentum must be in [0, 1]"),
    (["--step-size", "-2"], "--step-size must be >= 0"),
    (["--accumulate", "0"], "--accumulate must be at least 1"),
    (["--seed", str(2**40)], "--seed must be in"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0"),
    (["--dist-timeout", "0"], "--dist-timeout must be positive"),
    (["--nproc", "0"], "--nproc must be at least 1"),
])
def test_train_numbers_out_of_range_are_usage_errors(tmp_path, tiny_data, args, words):
    one_line(invoke("train", "--data", tiny_data, *TINY, "--out", tmp_path / "run", *args), 2, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,words", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--dist-timeout", "-5"], "--dist-timeout must be positive"),
    (["--epochs", "0", "--nproc", "2"], "--epochs must be at least 1"),
])
def test_resume_numbers_out_of_range_are_usage_errors(run_copy, args, words):
    one_line(invoke("train", "--resume", run_copy, *args), 2, words)


@pytest.mark.parametrize("args,words", [
    (["--steps", "2"], "--steps must be in [5, 300]"),
    (["--start-lr", "0"], "--start-lr must be positive"),
    (["--end-lr", "-1"], "--end-lr must be positive"),
    (["--val-fraction", "1"], "--val-fraction must be in (0, 1)"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--accumulate", "-1"], "--accumulate must be at least 1"),
])
def test_lr_find_numbers_out_of_range_are_usage_errors(tmp_path, tiny_data, args, words):
    one_line(invoke("lr-find", "--data", tiny_data, "--arch", "resnet18", "--weights", "none",
                    "--out", tmp_path / "lr", *args), 2, words)
    assert not (tmp_path / "lr").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_eval_and_quickstart_numbers_out_of_range_are_usage_errors(tmp_path, run_copy, value):
    one_line(invoke("eval", run_copy, "--batch-size", value), 2, "--batch-size must be at least 1")
    assert not (run_copy / "eval").exists()
    one_line(invoke("quickstart", "--out", tmp_path / "qs", "--epochs", value), 2, "--epochs must be at least 1")
    assert not (tmp_path / "qs").exists()


# ---- defined once ------------------------------------------------------------------------------------------
def test_the_cli_options_are_the_config_fields():
    from dataclasses import MISSING, fields

    from tlexport.cli import lrfind, train
    from tlexport.training.config import TrainConfig, flag_of
    from tlexport.training.lrfind import Sweep

    def params(command):
        return {p.name: p for p in command.params}

    train_params, lr_params = params(train.command), params(lrfind.command)
    for f in fields(TrainConfig):
        p = train_params[f.name]
        assert flag_of(f) in p.opts and p.default == (None if f.default is MISSING else f.default), f.name
        if f.name in lrfind.SWEPT:
            assert lr_params[f.name].default == p.default and lr_params[f.name].opts == p.opts, f.name
    for f in fields(Sweep):
        assert lr_params[f.name].default == f.default
    assert set(train_params) - {f.name for f in fields(TrainConfig)} == {"resume_dir", "as_json", "quiet",
                                                                          "overwrite", "nproc"}


def test_docs_train_page_is_generated_from_the_code():
    from tlexport.training import docs

    page = docs.PAGE.read_text()
    assert docs.render(page) == page, "docs/train.md is stale: run python -m tlexport.training.docs"
    assert "| `--accumulate` | `1` | at least 1 |" in page and "| `run.json` |" in page


def test_export_out_inside_the_data_is_refused_and_a_failed_export_leaves_no_parents(run_copy, tiny_data, tmp_path,
                                                                                      monkeypatch):
    from tlexport.errors import ExportError
    from tlexport.exporters import pipeline

    record = json.loads((run_copy / "split.json").read_text())
    inside = Path(record["root"]) / "exports" / "e1"
    one_line(invoke("export", run_copy, "--out", inside), 2, "is inside --data of the run")
    assert not (Path(record["root"]) / "exports").exists()
    calib = shutil.copytree(tiny_data / "train", tmp_path / "calib")
    one_line(invoke("export", run_copy, "--precision", "int8", "--calib-data", calib, "--out", calib / "x"), 2,
             "is inside --calib-data")
    assert not (calib / "x").exists()

    def fails(*args, **kwargs):  # a failure once the folder exists, e.g. a converter crashing
        raise ExportError("simulated converter failure")

    monkeypatch.setattr(pipeline, "_export_locked", fails)
    one_line(invoke("export", run_copy, "--out", tmp_path / "a" / "b" / "c"), 1, "simulated converter failure")
    assert not (tmp_path / "a").exists()
