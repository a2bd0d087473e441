"""Any torchvision classifier as --arch: the registry listing, ImageNet weights for other heads and
ViT's position embedding, the head-only freeze phase, and every tested architecture end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import predict_in_fresh_process
from safetensors.torch import load_file, save_file

from tlexport import models
from tlexport.cli import cli
from tlexport.errors import WeightsError
from tlexport.tables import archs


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


# ---- every tested architecture, end to end ---------------------------------------------------------
def _measured_state(arch: str, data, size: int) -> dict:
    """Random weights whose BatchNorm statistics were measured on the training images, saved for
    `--weights PATH`. A freshly initialised net keeps BatchNorm's initial statistics (mean 0,
    var 1) for all but one step of a tiny run; in eval mode many architectures then blow their
    activations up layer after layer (efficientnet_b3: logits ~1e12, regnet_x_400mf: NaN), which
    no fp16 or int8 gate can meaningfully compare. Measured statistics behave like pretrained ones."""
    from tlexport.data.images import load_rgb

    torch.manual_seed(0)
    model = models.create(arch, 3, image_size=size)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average: the statistics of exactly these images
            m.reset_running_stats()
    transform = models.default_preprocess(arch).with_crop(size).eval_transform()
    x = torch.stack([transform(load_rgb(f)) for f in sorted((data / "train").rglob("*.png"))])
    with torch.no_grad():
        model.train()(x)
    return model.state_dict()


def _measured_start(arch: str, data, size: int, path) -> str:
    save_file(_measured_state(arch, data, size), str(path))
    return str(path)


def _train(arch: str, data, size: int, tmp_path) -> tuple:
    start = _measured_start(arch, data, size, tmp_path / "start.safetensors")
    run = tmp_path / "run"
    # AdamW moves every parameter by about lr whatever its gradient: at 32 px the last stages see
    # 1x1 feature maps, BatchNorm over 4 values gives huge gradients, and one SGD step can turn
    # a from-scratch regnet or efficientnet into NaN; the export path is the point here.
    r = invoke("train", "--data", data, "--arch", arch, "--weights", start, "--epochs", 1, "--max-steps", 1,
               "--batch-size", 4, "--image-size", size, "--optimizer", "adamw", "--lr", 1e-4,
               "--workers", 0, "--out", run, "--quiet")
    assert r.exit_code == 0, r.output
    return run, json.loads((run / "run.json").read_text())["classes"]


def _check_predict(export_dir, data, classes, model_file="model.onnx") -> None:
    from tlexport.formats.metadata import read_metadata

    assert read_metadata(export_dir / model_file)["classes"] == classes
    r = invoke("predict", export_dir / model_file, data / "val", "--json", "--top-k", 2)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == len(list((data / "val").rglob("*.png")))
    assert all(len(x["top"]) == 2 and x["top"][0]["label"] in classes for x in rows)


def _parity(export_dir, json_file) -> dict:
    """`tlexport parity --trust-code` on the run's real val images: (runtime, precision) -> row.

    fp32 rows must pass every gate (tolerance from the registry, 100% top-1, batch independence,
    metadata). fp16/int8 rows must load, run, give finite logits of the right shape, be batch
    independent and carry the run's metadata; their agreement gate is not asserted: after one
    step every prediction is a near-tie, which int8 flips by design (export's own verification
    reports that, and `benchmarks/arch_parity.py` measures the fp32 error per architecture)."""
    r = invoke("parity", export_dir, "--trust-code", "--runtimes", "onnxruntime,torchscript,pt2",
               "--json", json_file)
    report = json.loads(json_file.read_text())
    assert report["images"] == 12 and report["source"] == "the run's val split", r.output
    rows = {(x["runtime"], x["precision"]): x for x in report["results"] if x["skipped_reason"] is None}
    for (runtime, precision), row in rows.items():
        assert row["finite"] and row["batch_independent"] and row["metadata_ok"], row
        assert row["shape"] == [12, 3] and row["dtype"] == "float32", row
        if precision == "fp32":
            assert row["passed"], row["failures"]
    return rows


# The biggest tested architectures take the cheaper path (ONNX fp32, verified, benchmarked and
# predicted); every other one exports every format and precision the CPU can make.
ONNX_ONLY = ("resnet101", "resnet152", "wide_resnet50_2", "convnext_small", "efficientnet_v2_s", "vit_b_16")
CPU_VARIANTS = (("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32"), ("pt2", "fp32"))


# At 32 px efficientnet_b2/b3 end in 1x1 feature maps whose BatchNorm statistics, measured on 12
# images, leave logits of ~1e3 that two correct fp32 runtimes already disagree on by 1e1 (cosine
# 0.9998; .pt2 is exact): 64 px keeps the comparison meaningful.
TEST_SIZE = {"efficientnet_b2": 64, "efficientnet_b3": 64}


def _size(spec) -> int:
    """The smallest test size the architecture accepts, at least 32 px."""
    size = max(TEST_SIZE.get(spec.name, 32), spec.min_size)
    return -(-size // spec.size_multiple) * spec.size_multiple


def _export(run, spec, variants) -> dict:
    from tlexport.tables.artifacts import file_name

    formats = sorted({f for f, _ in variants})
    precisions = sorted({p for _, p in variants})
    r = invoke("export", run, *[a for f in formats for a in ("--format", f)],
               *[a for p in precisions for a in ("--precision", p)], "--json", "--no-verify")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    made = {a["file"] for a in summary["artifacts"]}
    for fmt, precision in variants:
        reason = spec.unsupported_reason(fmt, precision)
        if reason:  # the registry refuses it: skipped, with its reason, never written
            assert reason in summary["skipped"] and file_name(fmt, precision) not in made
        else:
            assert file_name(fmt, precision) in made, (fmt, precision, summary["skipped"])
    return summary


# Every tested architecture costs 15-90 CPU-seconds here (ONNX's dynamo export and torch.export
# trace the whole graph); the default suite runs the cheap ones that each bring a path of their
# own, the sweep (`python -m pytest -m sweep`, see conftest.py) all of archs.TESTED.
DEFAULT_ARCHS = ("mobilenet_v3_small",)


def _arch_params():
    return [pytest.param(a, marks=[pytest.mark.slow] + ([] if a in DEFAULT_ARCHS else [pytest.mark.sweep]))
            for a in archs.TESTED]


@pytest.mark.parametrize("arch", _arch_params())
def test_every_tested_arch_trains_exports_verifies_benches_and_predicts(arch, tiny_data, tmp_path):
    spec = archs.get(arch)
    run, classes = _train(arch, tiny_data, _size(spec), tmp_path)
    variants = (("onnx", "fp32"),) if arch in ONNX_ONLY else CPU_VARIANTS
    _export(run, spec, variants)
    export_dir = run / "export"
    rows = _parity(export_dir, tmp_path / "parity.json")
    expected = {("onnxruntime" if f == "onnx" else f, p) for f, p in variants if not spec.unsupported_reason(f, p)}
    assert set(rows) == expected
    r = invoke("bench", export_dir, "--trust-code", "--warmup", 1, "--iters", 2, "--quiet",
               "--json", tmp_path / "bench.json")
    assert r.exit_code == 0, r.output
    cells = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert not [c for c in cells if c["error"]] and all(c["p50_ms"] > 0 for c in cells)
    assert {c["runtime"] for c in cells} >= {"torch-eager", "onnxruntime"}
    _check_predict(export_dir, tiny_data, classes)


# The full set at its smallest size, without paying for training or every format: the registry
# builds the model and replaces its head, the run loads, and the ONNX export runs export's own
# verification on the val images with the architecture's own tolerance (fp32: every logit within
# atol/rtol and 100% top-1) before it publishes. ONNX is the format every runtime family starts
# from (OpenVINO, ORT mobile, Triton). About 4 minutes on 2 cores: part of the sweep, which the
# scheduled run executes (`python -m pytest -m sweep`), not of the default suite.
# Not repeated here: the default full-path archs, the edge archs of the CLI test below, and
# resnet18 (the fake run of test_export/test_parity/test_bench).
COVERED_ELSEWHERE = (*DEFAULT_ARCHS, "efficientnet_b0", "regnet_x_400mf", "resnet18")


@pytest.mark.sweep
@pytest.mark.parametrize("arch", [a for a in archs.TESTED if a not in COVERED_ELSEWHERE])
def test_every_tested_arch_exports_verified_onnx(arch, tiny_data, tmp_path):
    from conftest import write_fake_run
    from tlexport import export
    from tlexport.formats.metadata import read_metadata

    spec, classes = archs.get(arch), ["circle", "square", "triangle"]
    size = _size(spec)
    run = write_fake_run(tmp_path / "run", tiny_data, classes, crop=size, arch=arch,
                         state=_measured_state(arch, tiny_data, size))
    model = models.load_run(run).load_model("best")
    assert model.get_submodule(spec.head).out_features == 3  # the registry's head, replaced for 3 classes
    result = export(run, formats=("onnx",), precisions=("fp32",))
    (artifact,) = result.artifacts
    assert artifact.verified is True and artifact.verification["passed"] is True, artifact.verification
    assert result.manifest["verification"]["passed"] is True
    meta = read_metadata(result.out_dir / "model.onnx")
    assert meta["classes"] == classes and meta["arch"] == arch and meta["preprocess"]["crop"] == size


# ---- the edge architectures through the CLI, predict without torch ---------------------------------
# About 40 CPU-seconds each. mobilenet_v3_small already takes the default full path above (train,
# export, parity, bench, predict), so its run here is part of the sweep; the other two bring
# architectures of their own into the default suite.
@pytest.mark.parametrize("arch", [pytest.param("mobilenet_v3_small", marks=pytest.mark.sweep),
                                  "efficientnet_b0", "regnet_x_400mf"])
def test_edge_arch_cli_train_export_parity_and_torch_free_predict(arch, tiny_data, tmp_path):

    run, classes = _train(arch, tiny_data, 64, tmp_path)
    r = invoke("export", run, "--format", "onnx", "--format", "torchscript", "--no-verify")
    assert r.exit_code == 0, r.output
    r = invoke("parity", run / "export", "--trust-code", "--runtimes", "onnxruntime,torchscript",
               "--json", tmp_path / "parity.json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["images"] == 12 and report["source"] == "the run's val split"
    compared = {(x["runtime"], x["precision"]) for x in report["results"] if x["skipped_reason"] is None}
    assert compared == {("onnxruntime", "fp32"), ("torchscript", "fp32")}
    got = predict_in_fresh_process(run / "export" / "model.onnx", tiny_data / "val")
    assert got["torch"] is False and len(got["labels"]) == 12 and set(got["labels"]) <= set(classes)


# ---- exporter fixes the architectures needed -------------------------------------------------------
def test_tracer_warnings_from_size_checks_pass_only_where_the_registry_says_so(tmp_path):
    from tlexport.errors import ExportError
    from tlexport.formats.torchscript.build import export_torchscript

    class SizeChecked(torch.nn.Module):  # ViT's pattern: assert the traced height and width
        def forward(self, x):
            torch._assert(x.shape[2] == 8, "wrong height")
            return x.mean((2, 3))

    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ExportError, match="TorchScript tracing failed"):
        export_torchscript(SizeChecked().eval(), x, tmp_path / "strict.ts", dynamic=True, meta={})
    notes = export_torchscript(SizeChecked().eval(), x, tmp_path / "m.ts", dynamic=True, meta={},
                               size_checks=archs.get("vit_b_16").trace_size_checks)
    assert any("tracer warnings allowed: ViT asserts" in n for n in notes)
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    other = torch.randn(5, 3, 8, 8)
    assert torch.allclose(loaded(other), other.mean((2, 3)))


def test_diverged_weights_are_refused_before_any_export(tmp_path, tiny_data):
    from conftest import write_fake_run

    run = write_fake_run(tmp_path / "run", tiny_data, ["circle", "square", "triangle"], crop=32)
    state = load_file(str(run / "best.safetensors"))
    state["fc.bias"][0] = float("nan")
    save_file(state, str(run / "best.safetensors"))
    r = invoke("export", run, "--precision", "int8")
    assert r.exit_code == 1 and "logits are not finite" in r.output, r.output
    assert not (run / "export").exists()


def test_bicubic_preprocessing_of_efficientnet_matches_torchvision_in_the_numpy_path():
    import random

    import numpy as np

    from tlexport.data.synth import draw_shape

    pre = models.default_preprocess("efficientnet_b0").with_crop(48)
    assert pre.interpolation == "bicubic"
    transform, rng = pre.eval_transform(), random.Random(2)
    for w, h in ((97, 61), (61, 97), (300, 200)):
        img = draw_shape("circle", 160, rng).resize((w, h))
        # the torch-free predict path and torchvision's eval transform see the same pixels (a
        # bilinear resize would differ by ~0.3 here)
        assert np.abs(pre.to_array(img) - transform(img).numpy()).max() < 1e-5
