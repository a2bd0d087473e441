"""The one step/epoch engine: gradient accumulation is the same optimisation as one big batch
(loss scaled by each micro-batch's share, the last short group included), the LR schedule counts
optimisation steps, DDP synchronises once per step, skipped batches; then `--accumulate` through
`tlexport train`, the head stage, resume and lr-find."""

import contextlib
import json

import pytest
import torch
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.training.engine import Engine, optimizer_steps
from tlexport.training.history import Progress

TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "4", "--image-size", "32", "--workers", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _toy(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return model, opt, sched


def _data(n=18):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


@pytest.mark.parametrize("scaler", [False, True])
def test_accumulated_micro_batches_train_exactly_like_one_big_batch(scaler):
    x, y = _data(18)  # 18 images: batches of 8, 8, 2 == micro-batches of 4, 4 | 4, 4 | 2 (a short last group)
    results = []
    for micro, accumulate in ((8, 1), (4, 2)):
        model, opt, sched = _toy()
        engine = Engine(opt, torch.nn.CrossEntropyLoss(), scheduler=sched, accumulate=accumulate,
                        scaler=torch.amp.GradScaler("cpu") if scaler else None)
        steps = optimizer_steps(len(_batches(x, y, micro)), accumulate)
        totals = engine.epoch(model, _batches(x, y, micro), steps, Progress())
        results.append((model.state_dict(), sched.last_epoch, totals))
    (big, big_steps, big_totals), (acc, acc_steps, acc_totals) = results
    assert big_steps == acc_steps == 3  # the schedule counts optimisation steps, not micro-batches
    for key in big:
        assert torch.allclose(big[key], acc[key], atol=1e-6), key
    assert acc_totals.images == big_totals.images == 18
    assert acc_totals.loss == pytest.approx(big_totals.loss, rel=1e-6)


class _FakeDDP(torch.nn.Module):
    """Counts the backward passes run inside no_sync, as DistributedDataParallel skips their all-reduce."""

    def __init__(self, module):
        super().__init__()
        self.module, self.inside, self.unsynced, self.synced = module, False, 0, 0

    @contextlib.contextmanager
    def no_sync(self):
        self.inside = True
        yield
        self.inside = False

    def forward(self, x):
        if self.inside:
            self.unsynced += 1
        else:
            self.synced += 1
        return self.module(x)


def test_ddp_synchronises_only_the_last_micro_batch_of_each_step_and_skips_count_as_steps():
    x, y = _data(16)
    model, opt, sched = _toy()
    net = _FakeDDP(model)
    engine = Engine(opt, torch.nn.CrossEntropyLoss(), scheduler=sched, accumulate=3)
    micro = _batches(x, y, 4)  # 4 micro-batches of 4
    batches = [micro[0], None, micro[1], None, None, None, micro[2], micro[3]]  # groups: [b, -, b] [-, -, -] [b, b]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    totals = engine.epoch(net, batches, optimizer_steps(len(batches), 3), Progress())
    assert sched.last_epoch == 3  # the empty group still steps the schedule
    assert (net.synced, net.unsynced) == (2, 2)  # one all-reduce per step that trained
    assert totals.images == 16
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    empty = Engine(opt, torch.nn.CrossEntropyLoss(), scheduler=sched, accumulate=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert empty.step(net, [None, None]) is None
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and sched.last_epoch == 4


# ---- --accumulate through the CLI ---------------------------------------------------------------------
def test_accumulate_is_recorded_counts_steps_and_is_honoured_by_resume(tmp_path, tiny_data):
    out = tmp_path / "run"
    # 36 train images in batches of 4: 9 micro-batches -> 5 steps of accumulate 2 (the last one short)
    r = invoke("train", "--data", tiny_data, *TINY, "--accumulate", 2, "--epochs", 2, "--freeze-epochs", 1,
               "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert [h["phase"] for h in json.loads(r.stdout)["history"]] == ["head", "full"]  # both stages accumulate
    meta = json.loads((out / "run.json").read_text())
    assert meta["options"]["accumulate"] == 2
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 * 5 and ckpt["scheduler"]["last_epoch"] == 10
    r = invoke("train", "--resume", out, "--epochs", 3, "--quiet")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 * 5 and ckpt["scheduler"]["last_epoch"] == 15  # resumed with accumulate 2
    r = invoke("train", "--resume", out, "--accumulate", 1, "--epochs", 4)
    assert r.exit_code == 2 and "--accumulate cannot be given with --resume" in r.output


def test_max_steps_caps_optimisation_steps_with_accumulation(tmp_path, tiny_data):
    out = tmp_path / "run"
    r = invoke("train", "--data", tiny_data, *TINY, "--accumulate", 3, "--max-steps", 2, "--epochs", 1,
               "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


def test_lr_find_sweeps_with_the_configs_accumulation(tmp_path, tiny_data, monkeypatch):
    groups = []
    real = Engine.step
    monkeypatch.setattr(Engine, "step", lambda self, net, group: groups.append(len(group)) or real(self, net, group))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("accumulate: 3\n")
    r = invoke("lr-find", "--data", tiny_data, *TINY, "--config", cfg, "--steps", 6, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == len(groups) <= 6 and set(groups) == {3}
