"""`--precision`: what auto chooses on a CPU, and the dtype the forward pass really runs in."""

import json

import pytest
import torch
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.training import torchutil

TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0",
        "--epochs", "1", "--max-steps", "1"]
CPU = torch.device("cpu")


def test_auto_on_cpu_needs_native_bf16_and_a_faster_probe(monkeypatch):
    monkeypatch.setattr(torchutil, "cpu_has_bf16", lambda: False)
    assert torchutil.resolve_precision(CPU, "auto") == (None, "the CPU has no AVX-512 BF16 or AMX")
    monkeypatch.setattr(torchutil, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(torchutil, "bf16_probe", lambda: (False, 0.9))
    assert torchutil.resolve_precision(CPU, "auto")[0] is None
    monkeypatch.setattr(torchutil, "bf16_probe", lambda: (True, 1.8))
    assert torchutil.resolve_precision(CPU, "auto") == (torch.bfloat16, "bf16 probe: 1.8x faster than fp32")
    assert torchutil.resolve_precision(CPU, "fp32")[0] is None
    assert torchutil.resolve_precision(CPU, "bf16")[0] is torch.bfloat16


@pytest.mark.parametrize("precision,dtype,recorded", [("bf16", torch.bfloat16, "bfloat16"),
                                                      ("fp32", torch.float32, None)])
def test_training_forward_runs_in_the_chosen_dtype(tmp_path, tiny_data, precision, dtype, recorded):
    seen, validation = [], []

    def hook(module, args, output):
        if isinstance(module, torch.nn.Conv2d):  # training steps have gradients, validation not
            (seen if torch.is_grad_enabled() else validation).append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        r = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), *TINY, "--precision", precision,
                                     "--out", str(tmp_path / "run"), "--quiet"])
    finally:
        handle.remove()
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {dtype}
    assert validation and set(validation) == {torch.float32}  # the accuracy of the fp32 model exported
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["mixed_precision"] == recorded and meta["options"]["precision"] == precision
