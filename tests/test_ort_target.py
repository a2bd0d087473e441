"""`.ort` files are not optimized again when onnxruntime loads them (#20.3): the portable ones
(the default, what ARM phones load) lack onnxruntime's x86 NCHWc layout, `--ort-target amd64`
saves it. Which layout a file holds shows in its reduced-operator config (the operators a minimal
build must include)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tlexport.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_amd64_target_saves_the_nchwc_layout_and_the_default_does_not(fake_run, tmp_path):
    configs = {}
    for target in ("portable", "amd64"):
        out = tmp_path / target
        r = invoke("export", fake_run, "--format", "ort", "--ort-target", target, "--out", out)
        assert r.exit_code == 0, r.output
        (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
        assert art["verified"] is True, art["verification"]
        configs[target] = (out / "model.required_operators.config").read_text()
        notes = " ".join(art["notes"])
        assert ("NCHWc layout saved for" in notes) == (target == "amd64"), notes
    assert "com.microsoft.nchwc" in configs["amd64"] and "com.microsoft.nchwc" not in configs["portable"]


def test_ort_target_needs_the_ort_format_and_a_known_value(fake_run, tmp_path):
    r = invoke("export", fake_run, "--ort-target", "amd64", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--ort-target applies to .ort files" in r.output, r.output
    r = invoke("export", fake_run, "--format", "ort", "--ort-target", "arm", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--ort-target" in r.output, r.output
    assert not (tmp_path / "x").exists()
