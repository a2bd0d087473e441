"""The README's main job, end to end and offline: `tlexport quickstart` (about 2 minutes)."""

import json

from click.testing import CliRunner

from tlexport.cli import cli


def test_quickstart_runs_the_whole_pipeline_offline(tmp_path):
    out = tmp_path / "qs"
    r = CliRunner().invoke(cli, ["quickstart", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "training from scratch" in r.output  # no ImageNet file in the test's TORCH_HOME
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["classes"] == ["circle", "cross", "square", "triangle"]
    assert run["metrics"]["best_val_accuracy"] >= 0.75  # it really learned the shapes
    manifest = json.loads((out / "run" / "export" / "manifest.json").read_text())
    made = {(a["file"], a["verified"]) for a in manifest["artifacts"]}
    assert made == {("model.onnx", True), ("model.ts", True), ("model.int8.onnx", True)}
    rows = [ln for ln in r.output.splitlines() if ln.startswith("│")]  # parity and bench tables name the file
    assert "PASS" in r.output and sum("model.int8.onnx" in ln and "onnxruntime" in ln for ln in rows) >= 2, r.output
    assert "cross" in r.output and "done" in r.output  # predictions and the closing summary
    # a second run refuses to overwrite the first
    again = CliRunner().invoke(cli, ["quickstart", "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
