"""Core ML export (coremltools converts on Linux): three .mlpackage folders whose specs load here
with the class labels of a classifier, an RGB image input at the crop size, tlexport's metadata and
the weight dtypes they claim; the pixels-in wrapper normalises exactly like training; where Core ML
cannot run, export records "not verified" with the reason and parity lists the files as skipped."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.cli import cli

pytest.importorskip("coremltools")

CLASSES = ["circle", "square", "triangle"]
FILES = {"fp32": "model.mlpackage", "fp16": "model.fp16.mlpackage", "int8": "model.int8.mlpackage"}
ON_MAC = sys.platform == "darwin"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def coreml_export(fake_run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("coreml") / "export"
    r = invoke("export", fake_run, "--format", "coreml", "--precision", "fp32,fp16,int8", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r.output


def _program(path: Path):
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    main = spec.mlProgram.functions["main"]
    return spec, list(main.block_specializations[main.opset].operations)


def _weights(ops) -> Counter:
    """(op type, data type) of every weight tensor (rank >= 2) the program holds."""
    from coremltools.proto import MIL_pb2

    out = Counter()
    for op in ops:
        if op.type == "const" and len(op.attributes["val"].type.tensorType.dimensions) >= 2:
            out[("const", MIL_pb2.DataType.Name(op.attributes["val"].type.tensorType.dataType))] += 1
        elif op.type == "constexpr_affine_dequantize":
            out[(op.type, MIL_pb2.DataType.Name(op.attributes["quantized_data"].type.tensorType.dataType))] += 1
    return out


def _labels(ops) -> list[str]:
    (classify,) = [op for op in ops if op.type == "classify"]
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [v.immediateValue.tensor.strings.values[0] for v in values]


def test_packages_and_manifest(coreml_export):
    out, output = coreml_export
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *sorted(FILES.values())]
    arts = {a["precision"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert {p: a["file"] for p, a in arts.items()} == FILES
    for precision, a in arts.items():
        folder = out / a["file"]
        assert (folder / "Manifest.json").is_file() and a["format"] == "coreml" and a["devices"] == ["cpu"]
        assert a["size"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if not ON_MAC:  # never reported verified when it was not run
            assert a["verified"] is None
            assert a["verification"] == {"passed": None, "reason": "not verified: coreml cannot run here "
                                                                  "(CoreML runs on macOS/iOS only)"}
    assert arts["int8"]["int8"]["calibration"]["method"] == "none (weight-only)"
    if not ON_MAC:
        assert "not verified: coreml cannot run here (CoreML runs on macOS/iOS only)" in " ".join(output.split())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_spec_is_a_classifier_with_an_rgb_image_input_and_the_metadata(coreml_export, fake_run, precision):
    from tlexport.formats.metadata import read_metadata

    out, _ = coreml_export
    spec, ops = _program(out / FILES[precision])
    (image,) = spec.description.input
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (48, 48)
    assert image.type.imageType.colorSpace == image.type.imageType.RGB
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs", "logits"]
    assert (spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName) == \
        ("classLabel", "classLabel_probs")
    assert _labels(ops) == CLASSES
    meta = json.loads(spec.description.metadata.userDefined["tlexport"])
    run = json.loads((fake_run / "run.json").read_text())
    assert meta["classes"] == CLASSES and meta["preprocess"] == run["preprocess"] and meta["arch"] == "resnet18"
    assert spec.description.metadata.userDefined["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert read_metadata(out / FILES[precision]) == meta  # tlexport's reader, through the package manifest
    assert Counter(op.type for op in ops)["conv"] == 20


def test_the_weights_are_what_each_precision_claims(coreml_export):
    """fp32: float32 weights; fp16: float16; int8: every conv weight int8 (affine dequantized at
    load), the 3x512 classifier (under 2048 elements) and the mean/std constants float32."""
    out, _ = coreml_export
    programs = {p: _program(out / f) for p, f in FILES.items()}
    assert _weights(programs["fp32"][1]) == {("const", "FLOAT32"): 23}  # 20 convs, fc, mean, std
    assert _weights(programs["fp16"][1]) == {("const", "FLOAT16"): 23}
    assert _weights(programs["int8"][1]) == {("constexpr_affine_dequantize", "INT8"): 20, ("const", "FLOAT32"): 3}
    assert programs["int8"][0].specificationVersion >= 7  # constexpr ops: iOS 16
    size = {p: sum(f.stat().st_size for f in (out / n).rglob("*.bin")) for p, n in FILES.items()}
    assert size["int8"] < 0.6 * size["fp16"] and size["fp16"] < 0.6 * size["fp32"]


def test_the_wrapper_normalises_exactly_like_training(fake_run):
    """The traced module takes 0-255 pixels: its logits are the network's on the normalised image."""
    import torch

    from tlexport.formats.coreml.build import pixel_classifier
    from tlexport.models import load_run

    run = load_run(fake_run)
    model = run.load_model("best", device="cpu")
    job = SimpleNamespace(run=run, model_on=lambda device: model)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    normalised = torch.from_numpy(np.stack([run.preprocess.normalize(p).transpose(2, 0, 1) for p in pixels]))
    with torch.no_grad():
        probs, logits = pixel_classifier(job)(torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
        ref = model(normalised)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(probs, torch.softmax(ref, 1), atol=1e-6, rtol=1e-4)


def test_the_runtime_rebuilds_the_exact_pixels(fake_run):
    from tlexport.formats.coreml.runtime import to_pixels
    from tlexport.models import load_run

    pre = load_run(fake_run).preprocess
    pixels = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    chw = pre.normalize(pixels).transpose(2, 0, 1)
    assert np.array_equal(to_pixels(chw, pre.mean, pre.std), pixels)


@pytest.mark.skipif(ON_MAC, reason="Core ML runs here")
def test_parity_lists_coreml_as_skipped_with_the_reason(coreml_export, tiny_data, tmp_path):
    out, _ = coreml_export
    r = invoke("parity", out, "--json", tmp_path / "p.json")
    assert r.exit_code == 1, r.output  # nothing but the reference could be compared
    rows = [x for x in json.loads((tmp_path / "p.json").read_text())["results"] if x["runtime"] == "coreml"]
    assert sorted(x["precision"] for x in rows) == ["fp16", "fp32", "int8"]
    assert all(x["skipped_reason"] == "CoreML runs on macOS/iOS only" for x in rows)
    got = invoke("predict", out / "model.mlpackage", tiny_data / "val")
    assert got.exit_code != 0 and "CoreML runs on macOS/iOS only" in got.output and "Traceback" not in got.output


@pytest.mark.skipif(not ON_MAC, reason="CoreML runs on macOS/iOS only")
def test_parity_runs_coreml_on_macos(coreml_export, tmp_path):
    out, _ = coreml_export
    r = invoke("parity", out, "--runtimes", "coreml", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads((tmp_path / "p.json").read_text())["results"] if x["runtime"] == "coreml"]
    assert sorted(x["precision"] for x in rows) == ["fp16", "fp32", "int8"] and all(x["passed"] for x in rows)
