"""One failing artifact does not take the others down (#22.8), and an int8 search that cannot
reach its gate says what it tried and what stayed int8 (#22.7). The int8 gate is made impossible
(top-1 agreement above 100%) at the one place every check reads it, so the failure is
deterministic and goes through the real search, verification and publishing code."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from tlexport.cli import cli


@pytest.fixture
def impossible_int8_gate(monkeypatch):
    """int8 must agree with fp32 on more than 100% of the images: no int8 file can pass."""
    from tlexport.verify import compare, parity

    real = compare.gates_for

    def gates_for(precision, *args, **kwargs):
        gates = real(precision, *args, **kwargs)
        return dataclasses.replace(gates, min_top1=100.5) if precision == "int8" else gates

    monkeypatch.setattr(compare, "gates_for", gates_for)
    monkeypatch.setattr(parity, "gates_for", gates_for)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_an_int8_that_fails_verification_leaves_fp32_published(fake_run, tmp_path, impossible_int8_gate):
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "onnx,ort", "--precision", "fp32,int8", "--int8-fallback", "none",
               "--calib-size", "8", "--out", out)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    # One list of the failures, once: the closing Error line counts them instead of repeating them.
    assert r.output.count("model.int8.onnx") == 1 and r.output.count("model.int8.ort") == 1, r.output
    assert r.output.count("top-1 agreement") == 2, r.output
    assert r.output.strip().splitlines()[-1] == (f"Error: 2 of 4 artifacts failed (listed above); 2 published in {out}")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.ort",
                                                     "model.required_operators.config"]
    m = _manifest(out)
    assert [(a["file"], a["verified"]) for a in m["artifacts"]] == [("model.onnx", True), ("model.ort", True)]
    assert all(a["sha256"] and a["size"] for a in m["artifacts"])  # complete entries for what was published
    failed = {f["file"]: f for f in m["failed"]}
    assert set(failed) == {"model.int8.onnx", "model.int8.ort"}
    assert all(f["stage"] == "verification" and "top-1 agreement" in f["reason"] for f in failed.values())
    parity = invoke("parity", out, "--runtimes", "onnxruntime")  # the published folder is whole and consistent
    assert parity.exit_code == 0, parity.output


def test_a_failed_search_publishes_the_rest_and_says_what_it_tried(fake_run, tmp_path, impossible_int8_gate):
    out = tmp_path / "export"
    (out).mkdir()
    (out / "notes.txt").write_text("the user's file")
    r = invoke("export", fake_run, "--precision", "fp32,int8", "--calib-size", "8", "--out", out, "--json")
    assert r.exit_code == 1, r.output
    result = json.loads(r.stdout)
    assert [a["file"] for a in result["artifacts"]] == ["model.onnx"]
    (fail,) = result["failed"]
    assert (fail["file"], fail["stage"]) == ("model.int8.onnx", "build")
    reason = fail["reason"]
    # The last step kept every candidate float and the message says so, with what still is int8.
    assert "int8 cannot reach its gate even with all 21 Conv/Gemm/MatMul layers in float" in reason
    assert "at that step 8 Add, 1 GlobalAveragePool, 1 Reshape stay int8" in reason  # resnet18's residual sums
    assert "tried every layer int8 with minmax, percentile, entropy, then keeping 1, 2, 4, 8, 16, 21 layer(s) " \
           "in float with " in reason  # the recovery path: methods first, then layers (with the closest method)
    assert "most sensitive first: node_" in reason
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "notes.txt"]
    assert _manifest(out)["failed"] == result["failed"]


def test_when_every_artifact_fails_nothing_is_written(fake_run, tmp_path, impossible_int8_gate):
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "onnx,triton", "--precision", "int8", "--int8-fallback", "none",
               "--calib-size", "8", "--out", out)
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("Error: nothing was exported: model.int8.onnx (onnx int8)")
    assert "model_repository/classifier_int8/1/model.onnx (triton int8)" in line and "--calib-method" in line
    assert not out.exists()


def test_a_build_failure_of_one_format_keeps_the_others(fake_run, tmp_path, monkeypatch):
    """A converter that fails (here ORT mobile's) costs only its own artifact."""
    from tlexport.errors import ExportError
    from tlexport.formats.ort import build as ort_build

    def broken(src, dst, config, *options):
        raise ExportError(f"ORT conversion of {src.name} failed (simulated)")

    monkeypatch.setattr(ort_build, "to_ort", broken)
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "onnx,ort,triton", "--out", out)
    assert r.exit_code == 1, r.output
    m = _manifest(out)
    assert [a["file"] for a in m["artifacts"]] == ["model.onnx", "model_repository/classifier/1/model.onnx"]
    assert m["failed"] == [{"file": "model.ort", "format": "ort", "precision": "fp32", "stage": "build",
                            "reason": "ORT conversion of model.onnx failed (simulated)"}]
    assert not (out / "model.ort").exists() and not (out / "model.required_operators.config").exists()
