"""Any torchvision classifier as --arch: the registry listing, ImageNet weights for other heads and
ViT's position embedding, the head-only freeze phase, and every tested architecture end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from tlexport import models
from tlexport.cli import cli
from tlexport.errors import WeightsError
from tlexport.spec import archs


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _fill_hub_cache(arch: str, seed: int = 0, **kwargs) -> dict:
    """A generated 1000-class state dict under torchvision's own file name (what a download leaves)."""
    torch.manual_seed(seed)
    state = models.create(arch, 1000, **kwargs).state_dict()
    path = models.hub_checkpoint_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


# ---- `tlexport archs` and --arch ------------------------------------------------------------------
def test_archs_json_lists_tested_archs_and_sees_the_hub_cache():
    r = invoke("archs", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["arch"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(archs.TESTED)
    for row in rows.values():
        assert row["params_m"] > 0.5 and row["gflops"] > 0.01, row
        assert row["preprocess"]["crop"] >= 224 and row["preprocess"]["resize"] >= row["preprocess"]["crop"]
        assert row["cached"] is False and row["tested"] is True
    assert rows["efficientnet_b0"]["preprocess"]["interpolation"] == "bicubic"
    assert rows["mobilenet_v3_small"]["params_m"] < rows["resnet18"]["params_m"] < rows["resnet152"]["params_m"]
    assert rows["mobilenet_v3_small"]["head"] == "classifier.3" and rows["vit_b_16"]["size_multiple"] == 16

    models.hub_checkpoint_path("mobilenet_v3_small").parent.mkdir(parents=True)
    models.hub_checkpoint_path("mobilenet_v3_small").write_bytes(b"placed by hand")
    cached = {row["arch"]: row["cached"] for row in json.loads(invoke("archs", "--json").stdout)}
    assert cached.pop("mobilenet_v3_small") is True and not any(cached.values())


def test_unknown_arch_is_one_line_with_suggestions(tiny_data):
    r = invoke("train", "--data", tiny_data, "--arch", "mobilenet_v3_smal", "--weights", "none")
    assert r.exit_code == 2, r.output
    error = [line for line in r.output.splitlines() if "Error" in line]
    assert len(error) == 1 and "did you mean mobilenet_v3_small" in error[0], r.output
    assert "Traceback" not in r.output


def test_image_size_the_arch_cannot_take_is_refused(tiny_data, tmp_path):
    r = invoke("train", "--data", tiny_data, "--arch", "vit_b_16", "--weights", "none",
               "--image-size", 40, "--out", tmp_path / "run")
    assert r.exit_code != 0 and "multiple of 16" in r.output, r.output
    assert not (tmp_path / "run").exists()


# ---- ImageNet weights for other heads --------------------------------------------------------------
def test_mobilenet_imagenet_weights_load_body_and_replace_classifier_3():
    state = _fill_hub_cache("mobilenet_v3_small")
    model, source = models.build("mobilenet_v3_small", 3, "imagenet")
    assert source.kind == "imagenet" and source.file == str(models.hub_checkpoint_path("mobilenet_v3_small"))
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(model.classifier[0].weight, state["classifier.0.weight"])  # body, not head
    assert torch.equal(model.features[3].block[0][1].running_var, state["features.3.block.0.1.running_var"])
    assert model.classifier[3].out_features == 3 and state["classifier.3.weight"].shape[0] == 1000


def test_vit_at_64_px_interpolates_the_224_px_position_embedding():
    state = _fill_hub_cache("vit_b_16")
    model, _ = models.build("vit_b_16", 3, "imagenet", image_size=64)
    pos, ref = model.encoder.pos_embedding, state["encoder.pos_embedding"]
    assert ref.shape == (1, 1 + 14 * 14, 768) and pos.shape == (1, 1 + 4 * 4, 768)
    assert torch.equal(pos[:, :1], ref[:, :1])  # the class token's embedding is kept as is
    grid = ref[:, 1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=True)
    assert torch.allclose(pos[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 16, 768), atol=1e-6)
    assert torch.equal(model.encoder.layers[11].mlp[3].weight, state["encoder.layers.encoder_layer_11.mlp.3.weight"])
    assert model.heads.head.out_features == 3
    with torch.inference_mode():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_weights_of_another_family_are_named(tmp_path, tiny_data):
    torch.save(models.create("resnet18", 10).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"do not fit mobilenet_v3_small \(they look like resnet18\)"):
        models.build("mobilenet_v3_small", 3, str(tmp_path / "r18.pth"))
    r = invoke("train", "--data", tiny_data, "--arch", "efficientnet_b0", "--weights", tmp_path / "r18.pth",
               "--image-size", 32, "--out", tmp_path / "run")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: weights in"), r.output
    assert "do not fit efficientnet_b0 (they look like resnet18)" in r.output
    assert not (tmp_path / "run").exists()


# ---- --freeze-epochs with a head that is not `fc` --------------------------------------------------
class _StopAfterFirstEpoch:
    """Progress that ends training when the second epoch starts: epoch 1's weights and checkpoint
    are on disk by then, so the test sees the state right after the head-only phase."""

    def message(self, text): ...
    def step(self, *a): ...
    def end_epoch(self, stats): ...

    def start_epoch(self, epoch, epochs, steps, phase):
        if epoch == 2:
            raise KeyboardInterrupt


def test_freeze_epochs_train_only_mobilenets_classifier_3(tmp_path, tiny_data):
    from tlexport.training.config import TrainConfig
    from tlexport.training.loop import train

    torch.manual_seed(3)
    start = models.create("mobilenet_v3_small", 3).state_dict()
    save_file(start, str(tmp_path / "start.safetensors"))
    cfg = TrainConfig(data=str(tiny_data), arch="mobilenet_v3_small", weights=str(tmp_path / "start.safetensors"),
                      epochs=2, freeze_epochs=1, batch_size=8, image_size=32, workers=0, max_steps=2,
                      lr=0.1, out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _StopAfterFirstEpoch())
    after = load_file(str(tmp_path / "run" / "last.safetensors"))
    body = [k for k in start if not k.startswith("classifier.3.")]
    assert any("running_mean" in k for k in body) and "classifier.0.weight" in body
    changed = [k for k in body if not torch.equal(after[k], start[k])]
    assert changed == [], changed  # parameters and BatchNorm statistics alike
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["history"][0]["phase"] == "head"
    # Only the head got gradients: SGD keeps momentum for exactly its two tensors, and they moved.
    head_group = next(g for g in ckpt["optimizer"]["param_groups"] if g["name"] == "head")
    stepped = {i for i, s in ckpt["optimizer"]["state"].items() if s.get("momentum_buffer") is not None}
    assert stepped == set(head_group["params"]) and len(stepped) == 2
    assert all(ckpt["optimizer"]["state"][i]["momentum_buffer"].abs().sum() > 0 for i in stepped)
