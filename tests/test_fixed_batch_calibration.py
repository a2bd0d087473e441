"""int8 calibration with image counts that are no multiple of a fixed batch (#22.2): LiteRT
converts at the example batch (2 when the export is dynamic), `--batch N` fixes every format's
batch, and a short last calibration batch used to fail the program's shape guard
("Guard failed: x.size()[0] == 2" with 45 training images). Odd and prime counts, every
fixed-batch conversion path, through the CLI."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from tlexport.cli import cli

needs_edge = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("executorch", "litert_torch", "ai_edge_litert", "tritonclient")),
    reason="the edge extra is not installed (pip install -e '.[edge]' && pip install --no-deps executorch==1.5.1)")


def export(fake_run, out, *args):
    r = CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--precision", "int8", *map(str, args)])
    assert r.exit_code == 0, r.output
    return json.loads((out / "manifest.json").read_text())


def _check(manifest, files, images):
    assert [a["file"] for a in manifest["artifacts"]] == files
    for a in manifest["artifacts"]:
        assert a["verified"] is True, (a["file"], a["verification"])
        assert a["int8"]["calibration"]["images"] == images, a["file"]


# The issue's own case, a dynamic export (LiteRT converts at batch 2) and an odd image count, is
# the shared edge export's (conftest.py EDGE_CALIB; test_edge.py checks every int8 file's count).


FIXED = {  # format -> its int8 file
    "onnx": "model.int8.onnx", "executorch": "model.int8.pte", "tflite": "model.int8.tflite",
    "ort": "model.int8.ort", "triton": "model_repository/classifier_int8/1/model.onnx",
}


@needs_edge
def test_every_fixed_batch_int8_takes_a_prime_image_count(fake_run, tmp_path):
    """--batch 3 and 7 images (3 + 3 + 1): every format that makes int8, in one export."""
    m = export(fake_run, tmp_path / "e", "--format", ",".join(FIXED), "--batch", 3, "--calib-size", 7)
    _check(m, list(FIXED.values()), 7)
    assert m["batch"] == 3


def test_fixed_batch_onnx_int8_takes_a_prime_image_count_without_the_edge_extra(fake_run, tmp_path):
    """The formats built from the int8 ONNX file need nothing optional: --batch 4, 7 images."""
    m = export(fake_run, tmp_path / "e", "--format", "onnx,ort", "--batch", 4, "--calib-size", 7)
    _check(m, ["model.int8.onnx", "model.int8.ort"], 7)
