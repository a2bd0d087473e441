"""The library path: export() returns a partial result (`.passed` False, `.failed` rows) like
parity() returns its report, raises only when nothing could be published, and the CLI still exits 1;
train() and export() take `progress=True` or a callable."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.errors import ExportError
from tlexport.exporters import pipeline


@pytest.fixture
def torchscript_fails(monkeypatch):
    """The TorchScript converter fails (as a real converter crash does); ONNX is untouched."""
    real = pipeline.builder

    def builder(fmt):
        if fmt != "torchscript":
            return real(fmt)

        def fails(job, say):
            raise ExportError("simulated converter failure")

        return fails

    monkeypatch.setattr(pipeline, "builder", builder)


def test_a_partial_export_is_a_result_not_an_exception(fake_run, tmp_path, torchscript_fails, capsys):
    from tlexport import export

    result = export(fake_run, formats=("onnx", "torchscript"), out=tmp_path / "api", progress=True)
    assert not result.passed
    assert [(f["file"], f["stage"], f["reason"]) for f in result.failed] == [
        ("model.ts", "build", "simulated converter failure")]
    assert [a.file for a in result.artifacts] == ["model.onnx"] and (tmp_path / "api" / "model.onnx").is_file()
    assert "1 artifact(s) failed, 1 published" in result.failure_line()
    said = capsys.readouterr().err.splitlines()  # progress=True: one plain line per step on stderr
    assert "verifying against torch-eager" in said and "loading weights" in said

    r = CliRunner().invoke(cli, ["export", str(fake_run), "--format", "onnx,torchscript", "--out", str(tmp_path / "c")])
    assert r.exit_code == 1, r.output
    assert "Error: 1 of 2 artifacts failed (listed above); 1 published" in r.output and "Traceback" not in r.output


def test_nothing_published_raises(fake_run, tmp_path, torchscript_fails):
    from tlexport import export

    with pytest.raises(ExportError, match="simulated converter failure"):
        export(fake_run, formats=("torchscript",), out=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_train_says_its_steps_to_a_callable(tiny_data, tmp_path):
    from tlexport import TrainConfig, train

    lines = []
    result = train(TrainConfig(data=str(tiny_data), arch="resnet18", weights="none", epochs=1, batch_size=16,
                               image_size=48, out=str(tmp_path / "run"), data_cache="off"), progress=lines.append)
    assert result.run_dir.is_dir()
    ends = [ln for ln in lines if ln.startswith("epoch 1: ")]
    assert len(ends) == 1 and " val loss " in ends[0] and " acc " in ends[0], lines
    assert any(ln.startswith("epoch 1/1 (") for ln in lines), lines
