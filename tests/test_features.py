"""The cached-feature head stage: which layers form the head, cache keys (a changed image,
preprocessing or backbone is recomputed, nothing else), and head epochs through the CLI."""

import csv
import json
import shutil
import types

import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from tlexport import models
from tlexport.cli import cli
from tlexport.data.folders import scan
from tlexport.training import features as F
from tlexport.training.config import TrainConfig

TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0"]


def test_head_block_keeps_dropout_before_the_head_and_refuses_conv_heads():
    block, why = F.head_block(models.create("mobilenet_v3_small", 3), "mobilenet_v3_small")
    assert why is None
    assert [type(m).__name__ for m in block] == ["Dropout", "Linear"] and block[-1].out_features == 3
    block, why = F.head_block(models.create("resnet18", 3), "resnet18")
    assert [type(m).__name__ for m in block] == ["Linear"]
    block, why = F.head_block(models.create("squeezenet1_0", 3), "squeezenet1_0")
    assert block is None and "not a Linear" in why


def test_headless_model_outputs_the_heads_input():
    model = models.create("resnet18", 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with F.headless(model, "resnet18"):
            feats = model(x)
        assert torch.allclose(model.fc(feats), model(x), atol=1e-5)  # and the head is back
    assert feats.shape == (2, 512)


def _prepare(model, data, cfg, run_dir, crop=32):
    scanned = scan(data)
    pre = models.default_preprocess("resnet18").with_crop(crop)
    inputs = types.SimpleNamespace(scanned=scanned, pre=pre)
    return F.prepare(model, "resnet18", inputs, cfg, torch.device("cpu"), None, run_dir, {})


def test_disk_cache_is_reused_only_when_the_keys_match(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    cfg = TrainConfig(data=str(data), arch="resnet18", image_size=32, feature_cache="disk", workers=0)
    torch.manual_seed(0)
    model = models.create("resnet18", 3)
    first = _prepare(model, data, cfg, tmp_path / "run")
    assert (first.cache, first.computed) == ("disk", 48)  # 36 train + 12 val, one eval view each
    again = _prepare(model, data, cfg, tmp_path / "run")  # a new store on the same folder: a new process
    assert again.computed == 0
    items = torch.tensor([[i, 0] for i in range(36)])
    assert torch.equal(first.train.gather(items), again.train.gather(items))

    changed = sorted((data / "train" / "circle").iterdir())[0]
    Image.open(changed).transpose(Image.Transpose.ROTATE_90).save(changed)  # same name, new pixels
    assert _prepare(model, data, cfg, tmp_path / "run").computed == 1
    assert _prepare(model, data, cfg, tmp_path / "run", crop=48).computed == 48  # other preprocessing
    with torch.no_grad():
        model.conv1.weight.mul_(0.5)  # another backbone
    assert _prepare(model, data, cfg, tmp_path / "run").computed == 48


def test_augmented_views_are_cached_per_view_and_reproducible(tmp_path, tiny_data):
    cfg = TrainConfig(data=str(tiny_data), arch="resnet18", image_size=32, cache_views=2, feature_cache="memory",
                      workers=0)
    model = models.create("resnet18", 3)
    a, b = _prepare(model, tiny_data, cfg, tmp_path), _prepare(model, tiny_data, cfg, tmp_path)
    assert a.computed == 36 * 2 + 12 and a.views == 2
    views = [a.train.gather(torch.tensor([[0, v]])) for v in (0, 1)]
    assert not torch.equal(views[0], views[1])  # two different random crops
    assert torch.equal(views[1], b.train.gather(torch.tensor([[0, 1]])))  # the same crop when recomputed


def test_linear_probe_trains_the_head_on_cached_features(tmp_path, tiny_data):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), *TINY, "--epochs", "3", "--linear-probe",
                                 "--feature-cache", "disk", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "cached backbone features of 48 image view(s) (disk" in r.output
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["phase"] for row in rows] == ["head"] * 3
    assert list((out / "feature-cache").glob("*.npy"))
    torch.manual_seed(0)  # the run's initial weights: seed 0, weights none
    initial, _ = models.build("resnet18", 3, "none", image_size=32)
    trained = load_file(str(out / "last.safetensors"))
    body = [k for k in trained if not k.startswith("fc.")]
    assert all(torch.equal(trained[k], initial.state_dict()[k]) for k in body)  # BatchNorm statistics too
    assert not torch.equal(trained["fc.weight"], initial.fc.weight)
    assert json.loads((out / "run.json").read_text())["options"]["linear_probe"] is True
