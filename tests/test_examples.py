"""examples/edge_app.py runs the in-graph model docs/deploy.md recommends (model.uint8.onnx: one
decoded uint8 image in) with the same answers as model.onnx, and refuses a file it cannot run in
one line instead of a runtime's traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_export import full_export

ROOT = Path(__file__).resolve().parents[1]


def app(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "examples" / "edge_app.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_edge_app_runs_the_in_graph_model_like_the_plain_one(fake_run, tiny_data, tmp_path_factory):
    exported = full_export(fake_run, tmp_path_factory)
    plain, baked = app(exported / "model.onnx", tiny_data / "val"), app(exported / "model.uint8.onnx", tiny_data / "val")
    assert plain.returncode == 0 and baked.returncode == 0, plain.stderr + baked.stderr
    rows = [ln for ln in plain.stdout.splitlines() if ln.strip()]
    assert len(rows) == 12  # every val image, one line each
    top1 = lambda out: [ln.split(": ")[1].split(" ")[0] for ln in out.splitlines() if ln.strip()]  # noqa: E731
    assert top1(baked.stdout) == top1(plain.stdout)


def test_edge_app_refuses_what_it_cannot_run_in_one_line(fake_run, tiny_data, tmp_path_factory, tmp_path):
    exported = full_export(fake_run, tmp_path_factory)
    (tmp_path / "junk.onnx").write_text("not a model")
    cases = {exported / "missing.onnx": "no such model file", exported / "manifest.json": "this app runs .onnx or .ort",
             tmp_path / "junk.onnx": "the runtime cannot load it", exported / "model.ts": "this app runs .onnx or .ort"}
    for model, says in cases.items():
        p = app(model, tiny_data / "val")
        assert p.returncode == 1 and p.stdout == "", p.stderr
        line = p.stderr.strip()
        assert "\n" not in line and line.startswith(f"Error: {model}: ") and says in line, line
