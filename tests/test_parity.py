"""tlexport parity: the pure comparison and gates, metadata checks, inputs, and the CLI end to end
on real exported artifacts (one session-scoped export of the fake run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.verify.compare import Gates, Images, check_metadata, compare, gates_for
from tlexport.verify.inputs import random_inputs

CLASSES = ["circle", "square", "triangle"]


def _logits(n=12, k=3, seed=0, scale=10.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)) * scale).astype(np.float32)


def _names(n):
    return [f"img{i}.png" for i in range(n)]


# ---- compare(): metrics and gates on synthetic logits --------------------------------------------
def test_identical_logits_pass_with_zero_error():
    ref = _logits()
    labels = ref.argmax(1)
    r = compare(ref, ref.copy(), Images(_names(12), labels), "fp32", gates_for("fp32"), classes=CLASSES)
    assert r.passed and r.failures == []
    assert r.max_abs == 0.0 and r.mean_abs == 0.0 and r.max_rel == 0.0
    assert r.cosine_min == pytest.approx(1.0)
    assert r.top1_agreement == 100.0 and r.top5_overlap is None  # 3 classes: a top 5 holds all of them
    assert r.accuracy == 100.0 and r.accuracy_delta == 0.0
    assert r.flips == [] and r.finite and r.within_tolerance


def test_top5_overlap_is_reported_only_with_more_than_5_classes():
    ref = _logits(k=8)
    swapped = ref.copy()
    order = np.argsort(-ref, axis=1)
    rows = np.arange(len(ref))
    # Every image's 5th and 6th classes trade places: top-1 unchanged, 4 of 5 top classes shared.
    swapped[rows, order[:, 4]], swapped[rows, order[:, 5]] = ref[rows, order[:, 5]], ref[rows, order[:, 4]]
    r = compare(ref, swapped, Images(_names(12), ref.argmax(1)), "fp32", gates_for("fp32"))
    assert r.top5_overlap == pytest.approx(0.8)
    five = compare(_logits(k=5), _logits(k=5), Images(_names(12)), "fp32", gates_for("fp32"))
    assert five.top5_overlap is None and five.to_dict()["top5_overlap"] is None


def test_fp32_reassociation_noise_passes_but_real_error_fails():
    ref = _logits()
    noise = ref * (1 + 1e-6) + 5e-6  # the size of float32 reassociation between runtimes
    ok = compare(ref, noise.astype(np.float32), Images(_names(12)), "fp32", gates_for("fp32"))
    assert ok.passed, ok.failures
    bad = ref.copy()
    bad[3, 1] += 0.05  # one logit off by 5e-2: far outside 1e-4 + 1e-3*|ref| unless |ref| > 50
    r = compare(ref, bad, Images(_names(12)), "fp32", gates_for("fp32", atol=1e-4, rtol=1e-4))
    assert not r.passed and r.within_tolerance is False
    assert any("outside atol" in f for f in r.failures)
    assert r.max_abs == pytest.approx(0.05, rel=1e-3)


def test_flips_are_listed_per_image_with_class_names():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 5.0], [1.0, 0.0, 0.5]], np.float32)
    out = ref.copy()
    out[1] = [0.0, 1.0, 2.0]  # square -> triangle
    labels = np.array([0, 1, 2, 0])
    r = compare(ref, out, Images(["a.png", "b.png", "c.png", "d.png"], labels), "int8", gates_for("int8"),
                classes=CLASSES)
    assert r.top1_agreement == pytest.approx(75.0)
    assert [(f["image"], f["reference"], f["runtime"]) for f in r.flips] == [("b.png", "square", "triangle")]
    assert r.flips[0]["reference_margin"] == pytest.approx(1.0)
    assert r.accuracy == pytest.approx(75.0) and r.accuracy_delta == pytest.approx(-25.0)
    assert not r.passed and r.allowed_flips == 1 and r.images_lost == 1 and r.allowed_lost == 0
    text = " ".join(r.failures)
    # one flip in 4 images is what a 2 % model shows 8 % of the time: only the lost image fails
    assert "top-1 agreement" not in text and "25.00 points below" in text


def test_int8_gate_allows_error_without_flips_and_fp32_does_not():
    ref = _logits(n=50, seed=1)
    out = ref + np.float32(0.05)  # shifts every logit equally: same ranking, errors of 5e-2
    assert compare(ref, out, Images(_names(50)), "int8", gates_for("int8")).passed
    assert not compare(ref, out, Images(_names(50)), "fp32", gates_for("fp32")).passed


def test_top1_threshold_is_inclusive_and_few_images_allow_no_flip():
    ref = np.tile(np.array([[2.0, 0.0, 0.0]], np.float32), (100, 1))
    out = ref.copy()
    out[0] = [0.0, 2.0, 0.0]  # 1 flip in 100 = 99 %: fp16 passes (>= 99), int8 passes (>= 98)
    assert compare(ref, out, Images(_names(100)), "fp16", gates_for("fp16")).passed
    # int8's gate is a binomial test of a 2 % flip rate: 12 images may show one flip (91.7 %), not two.
    assert compare(ref[:12], out[:12], Images(_names(12)), "int8", gates_for("int8")).passed
    out[1] = [0.0, 2.0, 0.0]  # 98 %: fp16 fails, int8 still passes
    assert not compare(ref, out, Images(_names(100)), "fp16", gates_for("fp16")).passed
    assert compare(ref, out, Images(_names(100)), "int8", gates_for("int8")).passed
    r = compare(ref[:12], out[:12], Images(_names(12)), "int8", gates_for("int8"))
    assert not r.passed and r.allowed_flips == 1 and "2 of 12 images flip, 1 allowed" in r.failures[0]


@pytest.mark.parametrize("n,flips,losses", [(12, 1, 1), (50, 3, 2), (128, 5, 3), (153, 6, 4), (256, 9, 5)])
def test_int8_budget_is_the_binomial_quantile(n, flips, losses):
    """The budget is the 95 % quantile of Binomial(n, 2 %) (flips) and of Binomial(n, 1 %) (images
    lost), checked against the definition: P(X <= k) >= 0.95 > P(X <= k - 1)."""
    from math import comb

    from tlexport.verify.compare import flip_budget

    def cdf(k, p):
        return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))

    g = gates_for("int8")
    assert (g.allowed_flips(n), g.allowed_loss(n)) == (flips, losses)
    for k, p in ((flips, 0.02), (losses, 0.01)):
        assert cdf(k, p) >= 0.95 > cdf(k - 1, p)
    assert flip_budget(n, -0.005, 0.05) == -1  # an impossible gate allows nothing


def test_non_finite_shape_and_dtype_fail():
    ref = _logits()
    nan = ref.copy()
    nan[2, 0] = np.nan
    r = compare(ref, nan, Images(_names(12)), "fp16", gates_for("fp16"))
    assert r.finite is False and not r.passed and "non-finite" in r.failures[0]
    assert r.to_dict()["max_abs"] is None  # NaN/Inf never reach the JSON
    r = compare(ref, ref[:, :2], Images(_names(12)), "fp32", gates_for("fp32"))
    assert not r.passed and "shape (12, 2), expected (12, 3)" in r.failures[0]
    r = compare(ref, ref.astype(np.float16), Images(_names(12)), "fp16", gates_for("fp16"))
    assert not r.passed and any("dtype float16" in f for f in r.failures)


def test_accuracy_needs_all_labels_known():
    ref = _logits()
    r = compare(ref, ref, Images(_names(12), np.full(12, -1)), "fp32", gates_for("fp32"))
    assert r.accuracy is None and r.accuracy_delta is None


def test_int8_accuracy_drop_gate():
    ref = np.tile(np.array([[2.0, 0.0, 0.0]], np.float32), (200, 1))
    labels = np.zeros(200, int)
    out = ref.copy()
    out[:5] = [0.0, 2.0, 0.0]  # 5 images lost of 200: what a 1-point loss shows at 95 %
    assert compare(ref, out, Images(_names(200), labels), "int8", gates_for("int8")).passed
    out[:6] = [0.0, 2.0, 0.0]  # 97 % agreement, accuracy drop 3 points
    r = compare(ref, out, Images(_names(200), labels), "int8", gates_for("int8"))
    assert r.top1_agreement == pytest.approx(97.0) and r.images_lost == 6 and r.allowed_lost == 5
    assert not r.passed and "3.00 points below" in r.failures[0]
    assert compare(ref, out, Images(_names(200)), "int8", gates_for("int8")).passed  # no labels: no gate


def test_gates_fp32_uses_user_tolerance_and_looser_precisions_never_tighter():
    assert gates_for("fp32", 1e-3, 1e-2) == Gates(1e-3, 1e-2, True, 100.0, None, 1e-3, 1e-2)
    fp16 = gates_for("fp16", 1e-4, 1e-3)
    assert (fp16.atol, fp16.rtol, fp16.require_allclose, fp16.min_top1) == (1e-2, 1e-2, False, 99.0)
    assert gates_for("fp16", 0.5, 0.5).atol == 0.5
    assert gates_for("int8").max_accuracy_drop == 1.0


# ---- metadata ----------------------------------------------------------------------------------
def _pre():
    return {"resize": 55, "crop": 48, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear"}


def test_metadata_equal_numerically_passes():
    meta = {"classes": list(CLASSES), "preprocess": dict(_pre(), mean=[0.48500000001, 0.456, 0.406])}
    assert check_metadata(meta, CLASSES, _pre(), "resnet18") == []


@pytest.mark.parametrize("change, expected", [
    ({"classes": ["square", "circle", "triangle"]}, "class order differs (index 0 is 'square'"),
    ({"classes": ["cat", "dog", "bird"]}, "class names differ"),
    ({"preprocess": dict(_pre(), mean=[0.5, 0.5, 0.5])}, "mean differs"),
    ({"preprocess": dict(_pre(), std=[1.0, 1.0, 1.0])}, "std differs"),
    ({"preprocess": dict(_pre(), crop=64)}, "crop differs"),
    ({"arch": "resnet50"}, "architecture differs"),
])
def test_metadata_problems_are_named(change, expected):
    meta = {"classes": list(CLASSES), "preprocess": _pre(), "arch": "resnet18", **change}
    problems = check_metadata(meta, CLASSES, _pre(), "resnet18")
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_missing_metadata_is_a_problem():
    assert "no tlexport metadata" in check_metadata(None, CLASSES, _pre())[0]


# ---- inputs ------------------------------------------------------------------------------------
def test_random_inputs_are_seeded_and_identical_per_batch():
    a, b = random_inputs(5, 32), random_inputs(5, 32)
    assert a.batch(0, 5).shape == (5, 3, 32, 32) and a.batch(0, 5).dtype == np.float32
    assert np.array_equal(a.batch(0, 5), b.batch(0, 5)) and a.labels is None
    assert np.array_equal(np.concatenate([x for _, x in a.batches(2)]), a.batch(0, 5))


def test_image_inputs_match_to_array_and_skip_bad_files(tmp_path, tiny_data):
    from tlexport.data.images import load_rgb
    from tlexport.data.folders import labelled_folder
    from tlexport.verify.inputs import load_images
    from tlexport.data.preprocess import Preprocess

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "val", data)
    (data / "square" / "broken.png").write_bytes(b"not a png")
    samples, root, _ = labelled_folder(data, ["square", "circle", "triangle"], unknown="unlabelled")  # other order on purpose
    pre = Preprocess(resize=55, crop=48)
    inputs = load_images(samples, pre, root, "test")
    assert inputs.skipped == [{"image": "square/broken.png", "reason": "not an image"}]
    assert len(inputs) == 12
    i = inputs.names.index(next(n for n in inputs.names if n.startswith("circle/")))
    assert inputs.labels[i] == 1  # mapped to the run's class index, not the folder order
    expected = pre.to_array(load_rgb(data / inputs.names[i]))
    assert np.array_equal(inputs.batch(i, i + 1)[0], expected)  # bit-identical to to_array


# ---- CLI: usage errors (no artifacts needed) ----------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--random", "4", "--data", "."], "either --data or --random"),
    (["--random", "0"], "--random must be a positive"),
    (["--atol", "-1"], "--atol must be a finite number"),
    (["--batch-size", "0"], "--batch-size must be an integer from 1 to 65536"),
    (["--device", "tpu"], "unknown device tpu"),
    (["--runtimes", "tensorflow"], "unknown runtime tensorflow"),
])
def test_bad_usage_exits_2_with_one_line(tmp_path, args, message):
    r = CliRunner().invoke(cli, ["parity", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_missing_export_folder_exits_2(tmp_path):
    r = CliRunner().invoke(cli, ["parity", str(tmp_path / "nope"), "--random", "2"])
    assert r.exit_code == 2 and "does not exist" in r.output, r.output


# ---- end to end on real artifacts ----------------------------------------------------------------
@pytest.fixture(scope="session")
def exported(fake_run, tmp_path_factory) -> Path:
    """One export of the fake run (ONNX + TorchScript, fp32 + int8) shared by the tests below. The
    classifier stays float in int8 (`int8_fallback="head"`): _negate_fc edits its weights."""
    from tlexport.exporters.pipeline import export

    out = tmp_path_factory.mktemp("parity") / "export"
    export(fake_run, formats=("onnx", "torchscript"), precisions=("fp32", "int8"), out=out, verify=False,
           int8_fallback="head")
    return out


def _onnx_variant(exported: Path, dest: Path, edit) -> Path:
    """A copy of model.onnx, edited (weights or metadata), alone in `dest`."""
    import onnx

    dest.mkdir(parents=True)
    model = onnx.load(str(exported / "model.onnx"))
    edit(model)
    onnx.save(model, str(dest / "model.onnx"))
    return dest


def _set_prop(key, fn):
    def edit(model):
        (prop,) = [p for p in model.metadata_props if p.key == key]
        prop.value = json.dumps(fn(json.loads(prop.value)))
    return edit


def _parity(*args):
    return CliRunner().invoke(cli, ["parity", *map(str, args)])


def test_identical_artifacts_pass_on_real_images(exported, fake_run, tiny_data, tmp_path):
    data = tmp_path / "val"
    shutil.copytree(tiny_data / "val", data)
    (data / "circle" / "empty.png").write_bytes(b"")
    out = tmp_path / "parity.json"
    r = _parity(exported, "--data", data, "--runtimes", "onnxruntime,torchscript",
                "--precisions", "fp32", "--json", out, "--trust-code")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "skipped image circle/empty.png: empty file" in r.output
    report = json.loads(out.read_text())
    assert {"passed", "reference", "images", "results"} <= set(report)
    assert report["passed"] is True and report["reference"] == "torch-eager/fp32/cpu"
    assert report["images"] == 12 and report["labelled"] is True
    assert report["skipped_images"] == [{"image": "circle/empty.png", "reason": "empty file"}]
    rows = {(x["runtime"], x["precision"]): x for x in report["results"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("torchscript", "fp32")}
    schema = {"runtime", "precision", "device", "max_abs", "mean_abs", "max_rel", "cosine_min",
              "top1_agreement", "top5_overlap", "accuracy", "accuracy_delta", "flips", "passed",
              "skipped_reason"}
    for row in rows.values():
        assert schema <= set(row)
        assert row["passed"] is True and row["skipped_reason"] is None
        assert row["max_abs"] < 1e-4 and row["top1_agreement"] == 100.0 and row["flips"] == []
        assert row["accuracy_delta"] == 0.0 and row["metadata_ok"] and row["batch_independent"]


def test_one_weight_tensor_scaled_fails_without_traceback(exported, fake_run, tmp_path):
    import numpy as np
    from onnx import numpy_helper

    def scale(model):
        init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        arr = numpy_helper.to_array(init).astype(np.float32) * np.float32(1.5)
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    bad = _onnx_variant(exported, tmp_path / "scaled", scale)
    out = tmp_path / "p.json"
    r = _parity(bad, "--run-dir", fake_run, "--json", out)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "outside atol=0.0001 rtol=0.001" in r.output
    rows = {x["runtime"]: x for x in json.loads(out.read_text())["results"]}
    row = rows["onnxruntime"]  # (openvino, when installed, runs the same file and fails too)
    assert row["passed"] is False and row["max_abs"] > 1e-3
    assert all(x["passed"] is False for x in rows.values() if x["skipped_reason"] is None)


@pytest.mark.parametrize("key, fn, problem", [
    ("tlexport.preprocess", lambda d: {**d, "mean": [0.5, 0.5, 0.5]}, "mean differs"),
    ("tlexport.preprocess", lambda d: {**d, "std": [0.25, 0.25, 0.25]}, "std differs"),
    ("tlexport.classes", lambda c: [c[1], c[0], *c[2:]], "class order differs"),
])
def test_wrong_metadata_fails_naming_the_problem(exported, fake_run, tmp_path, key, fn, problem):
    bad = _onnx_variant(exported, tmp_path / "bad", _set_prop(key, fn))
    r = _parity(bad, "--run-dir", fake_run, "--random", "2")
    assert r.exit_code == 1, r.output
    assert f"metadata: {problem}" in r.output and "Traceback" not in r.output


def test_random_mode_needs_no_data(exported, tmp_path):
    out = tmp_path / "p.json"
    r = _parity(exported, "--random", "4", "--runtimes", "onnxruntime", "--precisions", "fp32", "--json", out)
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["images"] == 4 and report["labelled"] is False and report["source"].startswith("random 4")
    assert report["results"][0]["accuracy"] is None and report["results"][0]["passed"] is True


def _negate_fc(model) -> None:
    """Flip the sign of the classifier's weights and bias in an int8 model (the classifier stays
    float there): every logit changes sign, so the top-1 becomes the former last class and every
    image flips (a stand-in for a bad quantisation, certain to exceed int8's flip budget)."""
    from onnx import numpy_helper

    for init in (i for i in model.graph.initializer if i.name in ("fc.weight", "fc.bias")):
        init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))


def test_int8_flips_are_reported_per_image(exported, fake_run, tmp_path):
    """The flips listed are exactly the val images whose int8 top-1 differs from torch's,
    recomputed here independently (torchvision transform + onnxruntime), on an int8 model whose
    classifier was damaged so that flips are certain."""
    import onnx
    import onnxruntime as ort
    import torch

    from tlexport.data.images import load_rgb
    from tlexport.models import load_run

    run = load_run(fake_run)
    samples = run.samples("val")
    x = torch.stack([run.preprocess.eval_transform()(load_rgb(p)) for p, _ in samples])
    with torch.no_grad():
        ref = run.load_model()(x).argmax(1).numpy()
    bad = tmp_path / "int8"
    bad.mkdir()
    model = onnx.load(str(exported / "model.int8.onnx"))
    _negate_fc(model)
    onnx.save(model, str(bad / "model.int8.onnx"))
    sess = ort.InferenceSession(str(bad / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    q = sess.run(None, {"image": x.numpy()})[0].argmax(1)
    expected = {(f"{p.parent.name}/{p.name}", run.classes[a], run.classes[b])
                for (p, _), a, b in zip(samples, ref, q) if a != b}
    assert expected  # the damage must produce flips, or this test proves nothing

    out = tmp_path / "p.json"
    r = _parity(bad, "--run-dir", fake_run, "--runtimes", "onnxruntime", "--json", out)
    assert r.exit_code == 1, r.output
    assert "top-1 agreement" in r.output and "top-1 flips on" in r.output
    (row,) = json.loads(out.read_text())["results"]
    assert (row["runtime"], row["precision"]) == ("onnxruntime", "int8")
    assert {(f["image"], f["reference"], f["runtime"]) for f in row["flips"]} == expected
    assert row["top1_agreement"] == pytest.approx(100.0 * (1 - len(expected) / len(samples)))
    assert row["accuracy"] is not None and row["passed"] is False
