"""Recipe options (EMA, mixup/cutmix, auto-augment, patience, class weights, balanced sampler,
--config): the pieces on toy inputs, then through `tlexport train` on tiny images."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from tlexport.cli import cli
from tlexport.errors import UsageError
from tlexport.training import recipe
from tlexport.training.config import TrainConfig, load_config_file

TINY = ["--arch", "resnet18", "--weights", "none", "--image-size", "32", "--workers", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ---- EMA ------------------------------------------------------------------------------------------
def test_ema_follows_the_decay_formula_on_weights_and_bn_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = recipe.make_ema(model, TrainConfig(data="x", ema=0.9))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = None
    for _ in range(4):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)
        now = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        # first update copies the model; later ones: ema = 0.9 ema + 0.1 current
        expected = now if expected is None else {k: 0.9 * expected[k] + 0.1 * now[k] for k in now}
    averaged = ema.module.state_dict()
    for key, value in expected.items():  # "1.running_mean" included: buffers are averaged too
        assert torch.allclose(averaged[key], value, atol=1e-6), key
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])
    assert not torch.allclose(averaged["1.running_mean"], model.state_dict()["1.running_mean"])
    assert int(ema.n_averaged) == 4
    assert recipe.make_ema(model, TrainConfig(data="x", ema=0.0)) is None


# ---- mixup / cutmix -------------------------------------------------------------------------------
def _batch(n=8, classes=4):
    return [(torch.rand(3, 16, 16), i % classes) for i in range(n)]


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mix_collate_makes_soft_targets_that_sum_to_one(mixup, cutmix):
    torch.manual_seed(0)
    batch = _batch()
    collate = recipe.train_collate(TrainConfig(data="x", mixup=mixup, cutmix=cutmix), num_classes=4)
    x, y = collate(batch)
    assert y.shape == (8, 4) and y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(8))
    assert (y.max(1).values < 1).all()  # every sample is a mix of two classes
    originals = torch.stack([b[0] for b in batch])
    assert not torch.equal(x, originals)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(torch.randn(8, 4), y)  # soft targets + smoothing
    assert torch.isfinite(loss)
    assert torch.equal(recipe.hard_labels(y), y.argmax(1))


def test_mix_prob_zero_gives_one_hot_and_off_gives_plain_collate():
    batch = _batch()
    x, y = recipe.train_collate(TrainConfig(data="x", mixup=0.4, mixup_prob=0.0), 4)(batch)
    labels = torch.tensor([b[1] for b in batch])
    assert torch.equal(y, torch.nn.functional.one_hot(labels, 4).float())
    assert torch.equal(x, torch.stack([b[0] for b in batch]))
    x, y = recipe.train_collate(TrainConfig(data="x"), 4)(batch)
    assert torch.equal(y, labels)


# ---- auto-augment ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cls", [("rand", "RandAugment"), ("trivial", "TrivialAugmentWide")])
def test_auto_augment_policies_sit_in_the_train_transform(name, cls):
    from PIL import Image

    from tlexport.models import default_preprocess

    pre = default_preprocess("resnet18").with_crop(32)
    t = pre.train_transform(True, 0.5, name)
    kinds = [type(s).__name__ for s in t.transforms]
    assert cls in kinds and kinds.index(cls) < kinds.index("ToTensor")
    assert "RandAugment" not in [type(s).__name__ for s in pre.train_transform(True, 0.5).transforms]
    img = Image.new("RGB", (40, 40), (120, 30, 200))
    assert t(img).shape == (3, 32, 32)


# ---- class imbalance ------------------------------------------------------------------------------
def test_class_weights_raise_the_loss_of_a_model_that_ignores_the_rare_class():
    samples = [("a", 0)] * 30 + [("b", 1)] * 10
    assert recipe.inverse_frequency(recipe.class_counts(samples, 2)) == pytest.approx([40 / 60, 40 / 20])
    labels = torch.tensor([s[1] for s in samples])
    logits = torch.tensor([[2.0, 0.0]]).repeat(40, 1)  # always says "majority"
    plain = recipe.make_criterion(TrainConfig(data="x"), samples, 2, "cpu")(logits, labels)
    weighted = recipe.make_criterion(TrainConfig(data="x", class_weights="auto"), samples, 2, "cpu")(logits, labels)
    assert weighted > plain  # the misclassified rare class counts more


def test_balanced_sampler_draws_classes_evenly_and_repeats_with_the_seed():
    class Data:
        samples = [("a", 0)] * 90 + [("b", 1)] * 10

    from tlexport.training.distributed import EpochSampler

    cfg = TrainConfig(data="x", balanced_sampler=True)
    assert recipe.sampling_weights(Data(), TrainConfig(data="x")) is None  # plain shuffle without the flag
    weights = recipe.sampling_weights(Data(), cfg)
    draws = [list(EpochSampler(100, seed=7, weights=weights, rank_=0, world=1)) for _ in range(2)]
    assert draws[0] == draws[1] and len(draws[0]) == 100
    rare = sum(Data.samples[i][1] for i in draws[0])
    assert 30 <= rare <= 70  # ~50 of 100 draws, not ~10
    later = EpochSampler(100, seed=7, weights=weights, rank_=0, world=1)
    later.set_epoch(1)
    assert list(later) != draws[0]  # a new epoch draws anew
    # two ranks split one epoch's draws between them, nothing drawn twice or lost
    shards = [list(EpochSampler(100, seed=7, weights=weights, rank_=r, world=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(draws[0])


# ---- early stopping -------------------------------------------------------------------------------
def test_early_stopping_counts_epochs_without_improvement():
    stop = recipe.EarlyStopping(patience=2)
    assert [stop.update(e, imp) for e, imp in enumerate([True, False, True, False, False], 1)] == \
        [False, False, False, False, True]
    assert stop.stopped_epoch == 5
    restored = recipe.EarlyStopping(patience=2)
    restored.load_state_dict({"bad_epochs": 1, "stopped_epoch": None})
    assert restored.update(3, False) and restored.stopped_epoch == 3
    never = recipe.EarlyStopping(patience=0)
    assert not any(never.update(e, False) for e in range(1, 20))


class _Interrupt(Exception):
    pass


def test_patience_stops_at_the_right_epoch_and_resume_keeps_the_counter(tmp_path, tiny_data):
    from tlexport.training.loop import Progress, train

    class StopAtEpoch3(Progress):
        def start_epoch(self, epoch, epochs, steps, phase):
            if epoch == 3:
                raise _Interrupt

    # a frozen body and a negligible LR keep val accuracy constant: epoch 1 is the best, then
    # every epoch is one without improvement, so patience 2 must stop after epoch 3
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(tiny_data), arch="resnet18", weights="none", image_size=32, workers=0,
                      batch_size=8, epochs=5, freeze_epochs=4, lr=1e-10, max_steps=1, patience=2,
                      balanced_sampler=True, out=str(out))
    with pytest.raises(_Interrupt):
        train(cfg, progress=StopAtEpoch3())
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["early_stopping"]["bad_epochs"] == 1
    r = invoke("train", "--resume", out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    # a counter restarted at 0 on resume would have stopped after epoch 4
    assert summary["stopped_epoch"] == 3 and summary["epochs"] == 3
    meta = json.loads((out / "run.json").read_text())
    assert meta["recipe"]["early_stopping"] == {"patience": 2, "epochs_without_improvement": 2, "stopped_epoch": 3}
    assert meta["recipe"]["sampler"] == "balanced"
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3
    r = invoke("train", "--resume", out, "--epochs", 6)
    assert r.exit_code == 2 and "stopped early at epoch 3" in r.output


# ---- the options together, from a config file, through the CLI -------------------------------------
@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("recipe") / "run"
    cfg = out.parent / "cfg.yaml"
    # lr: 1e-2 is a string to PyYAML (no dot); the loader must still make it a float
    cfg.write_text(f"data: {tiny_data}\narch: resnet18\nweights: none\nepochs: 2\nbatch-size: 4\n"
                   "lr: 1e-2\nema: 0.5\nmixup: 0.4\ncutmix: 1.0\nauto_augment: trivial\nclass_weights: auto\n")
    r = invoke("train", "--config", cfg, "--image-size", 32, "--workers", 0, "--max-steps", 2,
               "--batch-size", 8, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout), cfg


def test_config_file_values_are_used_and_flags_override_them(ema_run):
    out, _, cfg = ema_run
    options = json.loads((out / "run.json").read_text())["options"]
    assert options["batch_size"] == 8  # the flag, not the file's 4
    assert options["lr"] == 1e-2 and options["ema"] == 0.5 and options["epochs"] == 2  # the file's
    assert options["auto_augment"] == "trivial" and options["class_weights"] == "auto"
    assert options["config_file"] == str(cfg)


def test_ema_weights_are_saved_recorded_and_resumed_exactly(ema_run, tiny_data):
    out, summary, _ = ema_run
    meta = json.loads((out / "run.json").read_text())
    assert meta["recipe"]["saved_weights"] == "ema" and meta["recipe"]["class_weights"] == [1.0, 1.0, 1.0]
    assert meta["recipe"]["mix"]["cutmix"] == 1.0
    assert all(h["raw_val_acc"] is not None for h in summary["history"])
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert int(ckpt["ema"]["n_averaged"]) == 4  # 2 epochs x 2 steps
    last = load_file(str(out / "last.safetensors"))
    assert torch.equal(last["fc.weight"], ckpt["ema"]["module.fc.weight"])
    assert not torch.equal(last["fc.weight"], ckpt["model"]["fc.weight"])
    r = invoke("train", "--resume", out, "--epochs", 3, "--quiet")
    assert r.exit_code == 0, r.output
    # a fresh EMA would count 2 (and start from the raw weights); the restored one goes on
    assert int(torch.load(out / "checkpoint.pt", weights_only=True)["ema"]["n_averaged"]) == 6


def test_unknown_config_key_is_one_line_exit_2(tmp_path, tiny_data):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {tiny_data}\nbach_size: 8\n")
    r = invoke("train", "--config", cfg, *TINY)
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "unknown key 'bach_size'" in r.output
    assert "did you mean 'batch_size'" in r.output


@pytest.mark.parametrize("text,message", [
    ("epochs: [1, 2]\n", "'epochs' must be an integer"),
    ("augment: maybe\n", "'augment' must be true or false"),
    ("- just\n- a list\n", "expected a mapping"),
    ("lr: [unclosed\n", "is not valid YAML"),
])
def test_bad_config_values_name_the_key(tmp_path, text, message):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        load_config_file(cfg)


def test_json_config_is_read(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"patience": 3, "balanced-sampler": True, "image_size": None}))
    assert load_config_file(cfg) == {"patience": 3, "balanced_sampler": True, "image_size": None}


@pytest.mark.parametrize("args,message", [
    (["--ema", "1.5"], "--ema must be a decay in [0, 1)"),
    (["--mixup", "-1"], "--mixup must be >= 0"),
    (["--cutmix", "-0.5"], "--cutmix must be >= 0"),
    (["--mixup-prob", "2"], "--mixup-prob must be in [0, 1]"),
    (["--mixup-switch-prob", "-1"], "--mixup-switch-prob must be in [0, 1]"),
    (["--patience", "-1"], "--patience must be >= 0"),
    (["--auto-augment", "rand", "--no-augment"], "--auto-augment needs augmentation on"),
    (["--class-weights", "auto", "--balanced-sampler"], "use one"),
    (["--config", "{tmp}/missing.yaml"], "no such file"),
])
def test_bad_recipe_options_are_one_line_usage_errors(tmp_path, tiny_data, args, message):
    full = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = invoke("train", "--data", tiny_data, *TINY, "--out", tmp_path / "run", *full)
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()
