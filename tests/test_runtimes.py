"""The runtime interface: discovery from an export folder, skips with reasons, same logits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tlexport import runtimes as rt
from tlexport.errors import UsageError

from test_export import full_export


@pytest.fixture(scope="session")
def exported(fake_run, tmp_path_factory):
    return full_export(fake_run, tmp_path_factory)


def _keys(found):
    return {(r.name, r.precision, r.device) for r in found}


def test_discover_lists_every_runtime_the_artifacts_allow(exported, fake_run):
    found, skipped = rt.discover(exported, devices=("cpu", "cuda"), trust_code=True)
    keys = _keys(found)
    assert {("torch-eager", "fp32", "cpu"), ("onnxruntime", "fp32", "cpu"), ("onnxruntime", "fp16", "cpu"),
            ("onnxruntime", "int8", "cpu"), ("torchscript", "fp32", "cpu"), ("pt2", "fp32", "cpu")} <= keys
    assert all(r.artifact is None or r.artifact.name != "model.uint8.onnx" for r in found)
    eager = next(r for r in found if r.name == "torch-eager")
    assert eager.run_dir.resolve() == fake_run.resolve() and eager.metadata is None
    import torch

    if not torch.cuda.is_available():
        reasons = {(s.name, s.precision, s.device): s.reason for s in skipped}
        assert "CUDA" in reasons[("torch-eager", "fp32", "cuda")]
        assert ("onnxruntime-cuda", "fp32", "cuda") in reasons and not any(d == "cuda" for _, _, d in keys)
    found, _ = rt.discover(exported, names=["onnxruntime"], precisions=("int8",))
    assert _keys(found) == {("onnxruntime", "int8", "cpu")}
    assert found[0].label == "onnxruntime/int8/cpu"


def test_discover_rejects_unknown_names_and_reads_file_names_without_manifest(exported, tmp_path):
    with pytest.raises(UsageError, match="unknown runtime 'tensorflow'"):
        rt.discover(exported, names=["tensorflow"])
    with pytest.raises(UsageError, match="does not exist"):
        rt.discover(tmp_path / "nope")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(exported / "model.int8.onnx", bare)
    found, skipped = rt.discover(bare, names=["torch-eager", "onnxruntime", "torchscript"])
    assert _keys(found) == {("onnxruntime", "int8", "cpu")}
    assert any(s.name == "torch-eager" and "run directory" in s.reason for s in skipped)


def test_every_fp32_runtime_matches_the_reference(exported, fake_run):
    x = np.random.default_rng(3).standard_normal((3, 3, 48, 48)).astype(np.float32)
    ref = rt.reference_runtime(fake_run).load()
    want = ref.run(x)
    assert want.shape == (3, 3) and want.dtype == np.float32
    found, _ = rt.discover(exported, precisions=("fp32",), trust_code=True)
    assert {r.name for r in found} >= {"onnxruntime", "torchscript", "pt2"}
    for r in found:
        r.set_threads(1)
        got = r.load().run(x)
        r.synchronize()
        assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-4, r.label
        if r.artifact is not None:
            assert r.metadata["classes"] == ["circle", "square", "triangle"], r.label


def test_in_graph_model_runs_decoded_images_of_any_size_and_refuses_floats(exported):
    r = rt.for_artifact(exported / "model.uint8.onnx").load()
    assert r.in_graph_preprocess
    assert r.run_image(np.zeros((31, 200, 3), np.uint8)).shape == (1, 3)
    assert r.run_raw([np.zeros((48, 48, 3), np.uint8), np.full((90, 60, 3), 200, np.uint8)]).shape == (2, 3)
    with pytest.raises(UsageError, match="decoded uint8"):
        r.run(np.zeros((2, 3, 48, 48), np.float32))


def test_broken_artifact_is_runtime_unavailable(tmp_path):
    from tlexport.errors import RuntimeUnavailable

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(RuntimeUnavailable, match="cannot load"):
        rt.for_artifact(bad).load()
