"""Weights resolution: torchvision's offline cache, safe loading, wrong architecture, garbage."""

import os

import pytest
import torch
from safetensors.torch import save_file

from tlexport import models
from tlexport.errors import WeightsError


def _fill_hub_cache(arch="resnet18", seed=0):
    """A locally generated state dict under torchvision's own file name (what a download leaves)."""
    torch.manual_seed(seed)
    state = models.create(arch, 1000).state_dict()
    path = models.hub_checkpoint_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state, path


def test_imagenet_offline_without_cache_names_the_file():
    with pytest.raises(WeightsError) as e:
        models.build("resnet18", 3, "imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and os.environ["TORCH_HOME"] in msg
    assert "--weights none" in msg


def test_imagenet_from_prefilled_cache_loads_body_and_replaces_head():
    state, path = _fill_hub_cache()
    model, source = models.build("resnet18", 3, "imagenet")
    assert source.kind == "imagenet" and source.file == str(path)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert model.fc.out_features == 3


def test_state_dict_with_other_head_size_and_prefix(tmp_path):
    torch.manual_seed(1)
    state = {f"module.{k}": v for k, v in models.create("resnet18", 10).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    model, _ = models.build("resnet18", 4, str(tmp_path / "w.pth"))
    assert torch.equal(model.layer1[0].conv1.weight, state["module.layer1.0.conv1.weight"])
    save_file(models.create("resnet18", 2).state_dict(), str(tmp_path / "w.safetensors"))
    assert models.build("resnet18", 4, str(tmp_path / "w.safetensors"))[0].fc.out_features == 4


def test_weights_of_another_arch_are_named(tmp_path):
    torch.save(models.create("resnet34", 5).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(WeightsError, match="do not fit resnet18 .they look like resnet34"):
        models.build("resnet18", 3, str(tmp_path / "r34.pt"))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create a file: proof that code ran
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Evil(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        models.build("resnet18", 3, str(tmp_path / "evil.pt"))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["junk.pt", "junk.safetensors"])
def test_garbage_weights_file(tmp_path, name):
    (tmp_path / name).write_bytes(os.urandom(256))
    with pytest.raises(WeightsError, match="not a readable"):
        models.build("resnet18", 3, str(tmp_path / name))


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        models.build("resnet18", 3, str(tmp_path / "nope.safetensors"))
