"""`tlexport train` / `eval` / `--resume` through the real CLI on tiny generated images."""

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import load_file

from tlexport.cli import cli

TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32",
        "--workers", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("train") / "run"
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 2, "--freeze-epochs", 1,
               "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_run_dir_contents_and_json_summary(trained):
    out, summary = trained
    for name in ("best.safetensors", "last.safetensors", "run.json", "checkpoint.pt",
                 "metrics.csv", "curves.png", "split.json"):
        assert (out / name).is_file(), name
    assert summary["classes"] == ["circle", "square", "triangle"]
    assert summary["epochs"] == 2 and 0.0 <= summary["best_val_accuracy"] <= 1.0
    assert summary["weights_file"] == str(out / "best.safetensors")
    assert [h["phase"] for h in summary["history"]] == ["head", "full"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3


def test_best_weights_load_strictly_into_plain_torchvision(trained):
    out, _ = trained
    model = torchvision.models.resnet18(num_classes=3)
    model.load_state_dict(load_file(str(out / "best.safetensors")), strict=True)


def test_run_json_records_classes_and_weights_preprocessing(trained):
    meta = json.loads((trained[0] / "run.json").read_text())
    assert meta["arch"] == "resnet18" and meta["classes"] == ["circle", "square", "triangle"]
    pre = meta["preprocess"]
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert (pre["crop"], pre["resize"], pre["interpolation"]) == (32, 37, "bilinear")
    assert meta["weights"]["source"] == "none"
    assert meta["metrics"]["best_epoch"] in (1, 2)
    assert set(meta["versions"]) >= {"torch", "torchvision", "tlexport"}


def test_frozen_epoch_left_backbone_untouched(tmp_path, tiny_data):
    out = tmp_path / "frozen"
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 2, "--freeze-epochs", 1,
               "--max-steps", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["history"][0]["phase"] == "head"
    # the checkpoint is plain data: it loaded above with weights_only=True


def test_resume_continues_from_saved_epoch(tmp_path, tiny_data):
    out = tmp_path / "resume"
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    first = load_file(str(out / "last.safetensors"))
    r = invoke("train", "--resume", out, "--epochs", 2, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    second = load_file(str(out / "last.safetensors"))
    assert not torch.equal(first["fc.weight"], second["fc.weight"])  # it trained on
    r = invoke("train", "--resume", out)  # already finished its 2 epochs
    assert r.exit_code == 2 and "already finished" in r.output


def test_broken_files_are_skipped_and_listed(tmp_path, tiny_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "train" / "square" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out)
    assert r.exit_code == 0, r.output
    assert "skipped 2" in r.output
    listed = (out / "skipped.txt").read_text()
    assert "broken.png" in listed and "empty.jpg\tempty file" in listed


def test_imagenet_weights_from_prefilled_cache_train_offline(tmp_path, tiny_data):
    from tlexport import models

    path = models.hub_checkpoint_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(models.create("resnet18", 1000).state_dict(), path)
    out = tmp_path / "run"
    args = [a if a != "none" else "imagenet" for a in TINY]
    r = invoke("train", "--data", tiny_data, *args, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["weights"] == {"source": "imagenet", "file": str(path)}


@pytest.mark.parametrize("args,code,message", [
    (["--data", "{nope}"], 2, "does not exist"),
    (["--data", "{data}", "--epochs", "0"], 2, "--epochs must be at least 1"),
    (["--data", "{data}", "--batch-size", "-4"], 2, "--batch-size must be at least 1"),
    (["--data", "{data}", "--arch", "resnet9"], 2, "Invalid value for '--arch'"),
    (["--data", "{data}", "--weights", "imagenet", "--arch", "resnet18"], 1, "resnet18-f37072fd.pth"),
    (["--data", "{data}", "--weights", "{junk}"], 1, "not a readable"),
    (["--data", "{data}", "--device", "cuda"], 1, "no CUDA GPU"),
    (["--data", "{data}", "--out", "{file}"], 2, "is a file"),
])
def test_bad_input_one_line_error(tmp_path, tiny_data, args, code, message):
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("a GPU is present")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "afile").write_text("x")
    subst = {"{nope}": tmp_path / "nope", "{data}": tiny_data, "{junk}": tmp_path / "junk.pt",
             "{file}": tmp_path / "afile"}
    full = [str(subst.get(a, a)) for a in args]
    defaults = {"--weights": "none", "--arch": "resnet18"}
    for flag, value in defaults.items():
        if flag not in full:
            full += [flag, value]
    r = invoke("train", *full)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "afile").is_dir()


def test_eval_reports_metrics_and_confusion(trained, tiny_data):
    out, summary = trained
    r = invoke("eval", out, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["images"] == 12 and len(res["confusion"]) == 3
    assert sum(map(sum, res["confusion"])) == 12
    assert res["top1"] == pytest.approx(summary["best_val_accuracy"], abs=1e-6)
    assert res["top5"] is None  # 3 classes: a top 5 holds every class, so it is not reported
    assert "top-5" not in invoke("eval", out).output
    assert [c["class"] for c in res["per_class"]] == summary["classes"]
    assert (out / "eval" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    r = invoke("eval", out, "--data", tiny_data / "train", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 36
