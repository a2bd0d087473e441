"""`tlexport lr-find`: the sweep, the suggestion rules and state restoration on toy inputs, then
the command on tiny images."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.training.lrfind import run_lr_find, suggest


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_suggest_rules_on_a_known_curve():
    lrs = [10 ** (-6 + i / 10) for i in range(61)]  # 1e-6 .. 1
    # falls fastest around 1e-3 (logistic in log10 LR), lowest near 1e-1, then rises steeply
    smoothed = [2 - 1 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + 50 * max(0.0, math.log10(lr) + 1) ** 2
                for lr in lrs]
    picks = suggest(lrs, smoothed)
    assert picks["steepest_lr"] == pytest.approx(1e-3, rel=0.3)
    assert picks["min_loss_lr"] == pytest.approx(1e-1, rel=0.3)
    assert picks["min10_lr"] == pytest.approx(picks["min_loss_lr"] / 10)


def _toy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD([{"params": model[:2].parameters(), "lr": 0.01},
                           {"params": model[2].parameters(), "lr": 0.1}], momentum=0.9)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    return model, opt, x, y


def test_sweep_restores_model_and_optimizer_and_stops_on_divergence():
    model, opt, x, y = _toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen_ratios = []

    def step():
        seen_ratios.append(opt.param_groups[0]["lr"] / opt.param_groups[1]["lr"])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    result = run_lr_find(model, opt, step, start_lr=1e-4, end_lr=1e4, steps=80, rule="steepest")
    assert result.diverged and result.steps < 80  # LR 1e4 blows any loss up
    assert result.lrs[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([(1e8) ** (1 / 79)] * len(ratios))  # exponential
    assert seen_ratios == pytest.approx([0.1] * len(seen_ratios))  # body keeps its LR ratio
    assert result.lrs[0] <= result.suggested_lr <= result.lrs[-1]
    for key, value in model.state_dict().items():  # weights and BatchNorm buffers
        assert torch.equal(value, before[key]), key
    assert opt.state_dict()["state"] == {}  # no momentum left behind
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]


def test_lr_find_command_plots_and_suggests_without_a_run_folder(tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "lr"
    r = invoke("lr-find", "--data", tiny_data, "--arch", "resnet18", "--weights", "none", "--image-size", 32,
               "--workers", 0, "--batch-size", 8, "--steps", 12, "--rule", "steepest", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["rule"] == "steepest" and len(res["lrs"]) == res["steps"] <= 12
    assert min(res["lrs"]) <= res["suggested_lr"] <= max(res["lrs"])
    assert res["suggested_lr"] == res["steepest_lr"] and res["min10_lr"] == pytest.approx(res["min_loss_lr"] / 10)
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "lr_find.json").read_text())["suggested_lr"] == res["suggested_lr"]
    assert {p.name for p in tmp_path.iterdir()} <= {"lr", "torch_home"}  # no runs/ folder
    assert not list(tiny_data.rglob("run.json"))


@pytest.mark.parametrize("args,message", [
    (["--steps", "1000"], "--steps must be in [5, 300]"),
    (["--start-lr", "1", "--end-lr", "0.1"], "must be larger than --start-lr"),
])
def test_bad_sweep_is_a_one_line_usage_error(tiny_data, args, message):
    r = invoke("lr-find", "--data", tiny_data, "--arch", "resnet18", "--weights", "none", *args)
    assert r.exit_code == 2 and message in r.output and r.output.strip().count("\n") == 0


def test_a_loss_that_never_falls_is_flagged():
    model, opt, _, _ = _toy()
    rising = iter(1.0 + 0.01 * i for i in range(100))
    result = run_lr_find(model, opt, lambda: next(rising), start_lr=1e-5, end_lr=1.0, steps=20)
    assert not result.diverged and result.steps == 20
    assert result.min_loss_lr == pytest.approx(1e-5) and "never fell" in result.warning
    falling = iter(2.0 - 0.01 * i for i in range(100))
    assert run_lr_find(model, opt, lambda: next(falling), start_lr=1e-5, end_lr=1.0, steps=20).warning is None
