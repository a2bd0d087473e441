"""SIGTERM stops `tlexport train` as Ctrl-C does: the epoch's files are finished, the one line says
how to resume, exit 143 (130 for Ctrl-C); and no handler outlives the run, so a SIGTERM during the
interpreter's shutdown prints nothing. Each signal is sent by the child process to itself at a
chosen point (a patched function), so where it lands is certain, not a matter of timing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from tlexport.cli import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0",
        "--max-steps", "1"]


def run_cli(tmp_path: Path, args: list, prelude: str) -> subprocess.CompletedProcess:
    code = (f"import os, signal\n{prelude}\nfrom tlexport.cli import cli\n"
            f"cli.main({[str(a) for a in args]!r}, standalone_mode=True)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "th"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def signal_at_step(n: int, sig: str) -> str:
    """Patch the engine: the child signals itself right before its n-th optimisation step."""
    return ("import tlexport.training.engine as e\n"
            "real, calls = e.Engine.step, [0]\n"
            "def step(self, net, group):\n"
            "    calls[0] += 1\n"
            f"    if calls[0] == {n}:\n"
            f"        os.kill(os.getpid(), signal.{sig})\n"
            "    return real(self, net, group)\n"
            "e.Engine.step = step\n")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or p.name == ".tlexport.lock")


def test_sigterm_mid_epoch_exits_143_with_the_resume_line_and_resumes(tmp_path, tiny_data):
    out = tmp_path / "run"
    done = run_cli(tmp_path, ["train", "--data", tiny_data, *TINY, "--epochs", 3, "--out", out, "--quiet"],
                   signal_at_step(2, "SIGTERM"))  # epoch 2's first (and only) step
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: stopped by SIGTERM; its last finished epoch is saved: tlexport train --resume {out} continues it"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1 and leftovers(out) == []
    r = CliRunner().invoke(cli, ["train", "--resume", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert [h["epoch"] for h in json.loads(r.stdout)["history"]] == [1, 2, 3]


def test_sigterm_while_the_checkpoint_is_written_finishes_every_file_of_the_epoch(tmp_path, tiny_data):
    out = tmp_path / "run"
    prelude = ("import tlexport.run.folder as f\n"
               "real = f.RunDir.write_checkpoint\n"
               "def write(self, payload):\n"
               "    if payload['epoch'] == 2:\n"
               "        os.kill(os.getpid(), signal.SIGTERM)\n"  # lands after the weights, before the checkpoint
               "    real(self, payload)\n"
               "f.RunDir.write_checkpoint = write\n")
    done = run_cli(tmp_path, ["train", "--data", tiny_data, *TINY, "--epochs", 3, "--out", out, "--quiet"], prelude)
    assert done.returncode == 143, done.stderr
    assert "its last finished epoch is saved" in done.stderr and "Traceback" not in done.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2  # the write was finished
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2  # and the files after it
    assert json.loads((out / "run.json").read_text())["metrics"]["epochs_done"] == 2
    assert leftovers(out) == []


def test_ctrl_c_before_the_first_checkpoint_says_resume_starts_again(tmp_path, tiny_data):
    out = tmp_path / "run"
    done = run_cli(tmp_path, ["train", "--data", tiny_data, *TINY, "--epochs", 2, "--out", out, "--quiet"],
                   signal_at_step(1, "SIGINT"))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: interrupted before its first checkpoint: tlexport train --resume {out} starts it again from epoch 1"]
    assert (out / "run.json").is_file() and not (out / "checkpoint.pt").exists() and leftovers(out) == []


def test_sigterm_after_the_run_finished_prints_no_traceback(tmp_path, tiny_data):
    """Training's handler is gone once it returns: a SIGTERM in the last moments (here: while the
    process group is torn down) unwinds the command like any SIGTERM (tlexport.procs: children
    stopped, exit 143, one line), never a traceback, and the run is complete."""
    out = tmp_path / "run"
    prelude = ("import tlexport.training.distributed as d\n"
               "d.cleanup = lambda: os.kill(os.getpid(), signal.SIGTERM)\n")
    done = run_cli(tmp_path, ["train", "--data", tiny_data, *TINY, "--epochs", 1, "--out", out, "--quiet"], prelude)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr == "Error: terminated by SIGTERM\n"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1 and leftovers(out) == []
