"""Fault injection: processes killed (SIGKILL) at random and at chosen points of training and
export, then resumed / re-exported; two writers into one folder. Real processes, real signals:
what a user's kill -9, OOM killer or second terminal does.

Kill points that matter are injected deterministically (a patched function SIGKILLs its own
process); one kill per command lands at a seeded random moment after the work started.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from click.testing import CliRunner

from tlexport.cli import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32",
        "--workers", "0", "--seed", "3"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def start(code: str, tmp_path: Path) -> subprocess.Popen:
    """`python -c code` running this worktree's tlexport, in its own process group."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "th"))
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def cli_code(args, prelude: str = "") -> str:
    """Run the CLI in a child process after `prelude` (which may patch a kill point in)."""
    return (f"import os, signal, sys, time\n{prelude}\n"
            "from tlexport.cli import cli\n"
            f"cli.main({[str(a) for a in args]!r}, standalone_mode=True)\n")


def wait_for(predicate, proc, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the child process")


def kill9(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def leftovers(folder: Path) -> list[str]:
    """Files a killed process may leave: temp files, staging folders, lock files."""
    return sorted(p.name for p in folder.rglob("*")
                  if ".tmp-" in p.name or p.name.startswith(".tlexport-staging-") or p.name == ".tlexport.lock")


# ---- training ---------------------------------------------------------------------------------------
def test_train_killed_at_a_random_moment_resumes_and_leaves_nothing_stale(tmp_path, tiny_data):
    out = tmp_path / "run"
    proc = start(cli_code(["train", "--data", tiny_data, *TINY, "--epochs", 2, "--max-steps", 1, "--out", out,
                           "--quiet"]), tmp_path)
    wait_for(lambda: (out / ".tlexport.lock").exists(), proc)
    time.sleep(random.Random(int(time.time())).uniform(0.0, 2.0))  # anywhere: scan, epoch, checkpoint
    kill9(proc)
    if (out / "run.json").exists():  # killed after the run started (with or without a checkpoint)
        r = invoke("train", "--resume", out, "--quiet")
        finished = "already finished 2 epoch" in r.output  # the kill landed after the last epoch
        assert r.exit_code == 0 or finished, r.output
    else:  # killed while scanning: nothing of the run was written, a fresh start is allowed
        r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 2, "--max-steps", 1, "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert leftovers(out) == []
    split = json.loads((out / "split.json").read_text())
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["train_images"] == len(split["train"]) and meta["data"]["val_images"] == len(split["val"])


def test_kill_between_checkpoint_temp_file_and_rename(tmp_path, tiny_data):
    """The worst moment for a checkpoint: written in full, not yet renamed. Resume must start
    from the previous state and remove the orphaned temp file."""
    out = tmp_path / "run"
    prelude = ("import tlexport.fileio as f\n"
               "_replace = os.replace\n"
               "def replace(src, dst):\n"
               "    if str(dst).endswith('checkpoint.pt'):\n"
               "        import torch\n"
               "        if torch.load(src, weights_only=True)['epoch'] == 2:\n"
               "            os.kill(os.getpid(), signal.SIGKILL)\n"
               "    _replace(src, dst)\n"
               "f.os.replace = replace\n")
    proc = start(cli_code(["train", "--data", tiny_data, *TINY, "--epochs", 2, "--max-steps", 1, "--out", out,
                           "--quiet"], prelude), tmp_path)
    proc.wait(300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert [p.name for p in out.glob(".checkpoint.pt.tmp-*")], "the kill point was not reached"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    r = invoke("train", "--resume", out, "--json")
    assert r.exit_code == 0, r.output
    assert [h["epoch"] for h in json.loads(r.stdout)["history"]] == [1, 2]
    assert leftovers(out) == []


def test_two_trains_into_one_folder_exactly_one_wins(tmp_path, tiny_data):
    out = tmp_path / "run"
    first = start(cli_code(["train", "--data", tiny_data, *TINY, "--epochs", 2, "--max-steps", 2, "--out", out,
                            "--quiet"]), tmp_path)
    wait_for(lambda: (out / ".tlexport.lock").exists(), first)
    second = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--out", out, "--quiet")
    first.wait(300)
    assert first.returncode == 0, first.stderr.read()
    assert second.exit_code != 0
    lines = second.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and str(out) in lines[0], second.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2  # the winner's run, whole
    assert leftovers(out) == []


# ---- export ------------------------------------------------------------------------------------------
def test_export_killed_mid_staging_then_reexport_cleans_up(tmp_path, fake_run):
    out = tmp_path / "export"
    prelude = ("import tlexport.formats.torchscript.build as ts\n"
               "_save = ts._save\n"
               "def save(*a, **k):\n"
               "    _save(*a, **k)\n"
               "    os.kill(os.getpid(), signal.SIGKILL)\n"
               "ts._save = save\n")
    proc = start(cli_code(["export", fake_run, "--out", out, "--format", "torchscript,pt2", "--no-verify"],
                          prelude), tmp_path)
    proc.wait(300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    stale = list(out.glob(".tlexport-staging-*"))
    assert stale and (stale[0] / "model.ts").is_file(), "the kill point was not reached"
    r = invoke("export", fake_run, "--out", out, "--format", "torchscript", "--no-verify", "--json")
    assert r.exit_code == 0, r.output
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.ts"]


def test_two_exports_into_one_folder_exactly_one_wins(tmp_path, fake_run):
    out = tmp_path / "export"
    prelude = ("import tlexport.exporters.pipeline as p\n"
               "_build = p._build_all\n"
               "def slow(*a, **k):\n"
               "    time.sleep(2.0)\n"
               "    return _build(*a, **k)\n"
               "p._build_all = slow\n")
    first = start(cli_code(["export", fake_run, "--out", out, "--format", "torchscript", "--no-verify"], prelude),
                  tmp_path)
    wait_for(lambda: (out / ".tlexport.lock").exists(), first)
    second = invoke("export", fake_run, "--out", out, "--format", "torchscript", "--no-verify")
    first.wait(300)
    assert first.returncode == 0, first.stderr.read()
    assert second.exit_code == 1
    lines = second.output.strip().splitlines()
    assert len(lines) == 1 and "being written by another tlexport export" in lines[0], second.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.ts"]
    assert leftovers(out) == []
