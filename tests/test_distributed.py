"""Data-parallel training: the sharded sampler, the failure report, and one real 2-process CPU job
through `tlexport train --nproc 2` (killed rank -> one line + resumable checkpoint; resumed; one
writer; export + parity on the result)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import RandomSampler

import tlexport
from tlexport.cli import cli
from tlexport.training import distributed as D

TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0"]


def test_one_process_keeps_the_seeded_order_of_earlier_versions():
    """Resume must see the same batches as before: world size 1 is RandomSampler reseeded per epoch."""
    g = torch.Generator()
    old = RandomSampler(range(37), generator=g)
    new = D.EpochSampler(37, seed=5, rank_=0, world=1)
    for epoch in (0, 3):
        g.manual_seed(5 * 1000 + epoch)
        new.set_epoch(epoch)
        assert list(new) == list(old)


def test_ranks_share_an_epoch_without_overlap_and_reshuffle_every_epoch():
    shards = [D.EpochSampler(37, seed=1, rank_=r, world=2) for r in (0, 1)]
    assert [len(s) for s in shards] == [19, 19]  # padded: every rank runs the same number of steps
    for s in shards:
        s.set_epoch(2)
    a, b = list(shards[0]), list(shards[1])
    assert set(a) | set(b) == set(range(37)) and len(set(a) & set(b)) == 1  # one index repeated as padding
    shards[0].set_epoch(3)
    assert list(shards[0]) != a
    val = [D.EpochSampler(5, shuffle=False, pad=False, rank_=r, world=2) for r in (0, 1)]
    assert [list(v) for v in val] == [[0, 2, 4], [1, 3]]


def _failure(exitcode, message="", timestamp=0, signal_name="N/A"):
    return SimpleNamespace(exitcode=exitcode, message=message, timestamp=timestamp,
                           signal_name=lambda: signal_name)


def test_the_failure_report_names_the_rank_that_died_not_the_ones_stopped_after_it():
    failures = {0: _failure(1, "unexpected RuntimeError: Connection closed by peer", 10),
                1: _failure(-9, timestamp=11, signal_name="SIGKILL"),
                2: _failure(-15, timestamp=12, signal_name="SIGTERM")}
    assert D.describe_failure(failures) == "rank 1 died (SIGKILL)"
    failures = {0: _failure(-15, timestamp=3, signal_name="SIGTERM"), 1: _failure(1, "data folder is empty", 5)}
    assert D.describe_failure(failures) == "rank 1: data folder is empty"


# ---- one real job -----------------------------------------------------------------------------------
AUDIT = textwrap.dedent('''
    import os, sys
    RUN, LOG = os.environ["AUDIT_RUN_DIR"], os.environ["AUDIT_LOG_DIR"]
    DATA, MARKER = os.environ["AUDIT_DATA_DIR"], os.environ["AUDIT_MARKER"]
    busy = False
    def hook(event, args):
        global busy
        if busy or event not in ("open", "os.rename", "os.mkdir", "os.remove"):
            return
        path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if event == "open":
            mode, flags = args[1], args[2]
            if not (mode and set(mode) & set("wax+")) and not (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
                # rank 1 reads a training image once epoch 1 is saved: the job is inside a later epoch
                if (path.startswith(DATA) and os.environ.get("RANK") == "1" and not os.path.exists(MARKER)
                        and os.path.exists(os.path.join(RUN, "checkpoint.pt"))):
                    busy = True
                    open(MARKER, "w").close()
                    busy = False
                return
        if not path.startswith(RUN):
            return
        busy = True
        with open(os.path.join(LOG, f"{os.getpid()}.log"), "a") as f:
            f.write(os.environ.get("RANK", "launcher") + "\\n")
        busy = False
    sys.addaudithook(hook)
''')


def _audit_env(tmp_path, run, data):
    """Every process of the job logs its writes under `run` (a sitecustomize audit hook), and rank 1
    leaves a marker file once it reads images after the first checkpoint."""
    hooks, logs = tmp_path / "hooks", tmp_path / "writes"
    hooks.mkdir()
    logs.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    root = str(Path(tlexport.__file__).resolve().parents[1])
    return {"AUDIT_RUN_DIR": str(run), "AUDIT_LOG_DIR": str(logs), "AUDIT_DATA_DIR": str(data),
            "AUDIT_MARKER": str(tmp_path / "inside-epoch"),
            "PYTHONPATH": os.pathsep.join([str(hooks), root, os.environ.get("PYTHONPATH", "")])}, logs


def _kill_rank(rank: int, marker: str) -> bool:
    """SIGKILL the worker with RANK=`rank` whose environment (inherited from its launcher) holds `marker`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and marker.encode() in env:
            os.kill(int(pid), signal.SIGKILL)
            return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_two_process_job_dies_cleanly_resumes_and_exports(tmp_path, tiny_data, monkeypatch):
    run = tmp_path / "run"
    env, logs = _audit_env(tmp_path, run, tiny_data)
    marker = uuid.uuid4().hex  # the workers inherit the launcher's environment: this job's rank 1 alone is killed
    # 40 epochs: the job cannot end before the kill (it waits for the marker, then kills at once);
    # --accumulate 2 runs the engine's DDP no_sync path in both stages
    job = subprocess.Popen(
        [sys.executable, "-m", "tlexport", "train", "--data", str(tiny_data), *TINY, "--epochs", "40",
         "--freeze-epochs", "1", "--accumulate", "2", "--nproc", "2", "--out", str(run), "--quiet"],
        env={**os.environ, **env, "TEST_JOB": marker}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inside = Path(env["AUDIT_MARKER"])
    deadline = time.monotonic() + 300  # a bound on a hang, not a timing assumption
    while not inside.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inside.exists(), job.communicate(timeout=60)[1] if job.poll() is not None else "no marker"
    killed = _kill_rank(1, f"TEST_JOB={marker}")
    _, err = job.communicate(timeout=300)
    assert killed, err
    assert job.returncode == 1
    expected = (f"Error: rank 1 died (SIGKILL); the job stopped. Its last finished epoch is saved: "
                f"tlexport train --resume {run} --nproc 2")
    assert err.strip().splitlines() == [expected], err
    done = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= done < 40 and not list(run.glob(".*tmp*"))

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = CliRunner().invoke(cli, ["train", "--resume", str(run), "--nproc", "2", "--epochs", str(done + 1), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [h["epoch"] for h in summary["history"]] == list(range(1, done + 2))
    assert summary["history"][0]["phase"] == "head" and summary["history"][-1]["phase"] == "full"
    meta = json.loads((run / "run.json").read_text())
    assert meta["world_size"] == 2 and meta["metrics"]["epochs_done"] == done + 1
    writers = [log.read_text().split() for log in logs.glob("*.log")]
    assert len(writers) == 2 and all(set(w) == {"0"} for w in writers)  # one writer per job: rank 0

    r = CliRunner().invoke(cli, ["export", str(run), "--format", "onnx", "--precision", "fp32",
                                 "--out", str(tmp_path / "export")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["parity", str(tmp_path / "export"), "--data", str(tiny_data / "val")])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output


def test_every_setup_call_of_a_cuda_rank_answers_its_own_gpu(monkeypatch):
    """The loop asks for the device more than once (train, then the session): a rank on the
    second GPU must hear cuda:1 every time, also once its process group exists."""
    import torch

    from tlexport.training import distributed as D

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(D, "is_initialized", lambda: True)  # the group is already joined
    assert D.setup("cuda", 60) == torch.device("cuda", 1)
    assert D.setup("auto", 60) == torch.device("cuda", 1)
