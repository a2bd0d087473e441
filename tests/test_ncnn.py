"""ncnn export: a folder with pnnx's param/bin pair and metadata.json, shape hints for the crop, per-
image verification, parity, torch-free predict, threads and fp16 options honoured, other image
sizes run unchanged, int8 refused with its reason, and broken folders refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import predict_in_fresh_process

from tlexport.cli import cli

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

CLASSES = ["circle", "square", "triangle"]
FILES = ["metadata.json", "model.bin", "model.param"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def ncnn_export(fake_run, tmp_path_factory) -> tuple[Path, str]:
    """fp32 + fp16 folders, verified; int8 asked for too (not offered: skipped with the reason)."""
    out = tmp_path_factory.mktemp("ncnn") / "export"
    r = invoke("export", fake_run, "--format", "ncnn", "--precision", "fp32,fp16,int8", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r.output


def _digest(folder: Path) -> str:
    lines = "".join(f"{p.name}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in sorted(folder.iterdir()))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_folders_manifest_and_metadata(ncnn_export, fake_run):
    from tlexport.formats.metadata import read_metadata

    out, output = ncnn_export
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.fp16.ncnn", "model.ncnn"]
    manifest = json.loads((out / "manifest.json").read_text())
    arts = {a["file"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"model.ncnn", "model.fp16.ncnn"}
    for name, a in arts.items():
        folder = out / name
        assert sorted(p.name for p in folder.iterdir()) == FILES
        assert (a["format"], a["devices"], a["verified"]) == ("ncnn", ["cpu"], True)
        assert a["verification"]["top1_agreement"] == 1.0 and a["verification"]["inputs"] == "the run's val split"
        assert a["size"] == sum(p.stat().st_size for p in folder.iterdir()) and a["sha256"] == _digest(folder)
        assert a["inputs"] == [{"name": "in0", "dtype": "float32", "shape": [3, 48, 48]}]
        assert a["outputs"] == [{"name": "out0", "dtype": "float32", "shape": [3]}]
        meta = read_metadata(folder)
        assert meta["classes"] == CLASSES and meta["preprocess"]["crop"] == 48 and meta["arch"] == "resnet18"
    assert arts["model.ncnn"]["verification"]["max_abs"] < 1e-4  # fp32 within the fp32 gate
    # fp16 storage: half the weight bytes
    fp32, fp16 = ((out / n / "model.bin").stat().st_size for n in ("model.ncnn", "model.fp16.ncnn"))
    assert 0.45 < fp16 / fp32 < 0.55
    (skip,) = [s for s in manifest["skipped"] if s.startswith("ncnn int8")]
    assert "ncnn2table and ncnn2int8 are in neither the ncnn nor the pnnx wheel" in skip and skip in " ".join(output.split())
    assert manifest["versions"]["pnnx"] and manifest["versions"]["ncnn"]


def test_the_graph_is_pnnx_fused_with_shape_hints_for_the_crop(ncnn_export):
    """resnet18: every conv2d one Convolution with its BatchNorm (and ReLU) fused in, the fc one
    InnerProduct, nothing left that ncnn has no layer for; shape hints on every layer."""
    from tlexport.formats.ncnn.metadata import SHAPE_HINTS, read_param

    out, _ = ncnn_export
    graph = read_param(out / "model.ncnn" / "model.param")
    types = [layer.type for layer in graph.layers]
    assert types.count("Convolution") == 20 and types.count("InnerProduct") == 1 and "BatchNorm" not in types
    assert not [t for t in types if "." in t]
    assert sum(layer.param("9") == "1" for layer in graph.layers if layer.type == "Convolution") == 9  # ReLU fused
    assert graph.input_shape() == (3, 48, 48) and graph.outputs == ["out0"]
    hints = {layer.name: [int(v) for v in layer.param(SHAPE_HINTS).split(",")] for layer in graph.layers}
    assert hints[graph.inputs[0].name] == [5, 3, 48, 48, 1, 3]
    assert hints[graph.layers[1].name] == [5, 3, 24, 24, 1, 64]  # the stride-2 stem
    assert hints[graph.layers[-1].name] == [5, 1, 3, 1, 1, 1]  # logits: 1-D, 3 classes
    fp16 = read_param(out / "model.fp16.ncnn" / "model.param")
    assert [layer.type for layer in fp16.layers] == types


def test_parity_runs_both_folders(ncnn_export, tmp_path):
    out, _ = ncnn_export
    r = invoke("parity", out, "--runtimes", "ncnn", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p.json").read_text())
    rows = [x for x in report["results"] if x["runtime"] == "ncnn"]
    assert {(Path(x["artifact"]).name, x["precision"]) for x in rows} == {("model.ncnn", "fp32"), ("model.fp16.ncnn", "fp16")}
    assert report["images"] == 12 and all(x["passed"] and x["batch_independent"] and x["shape"] == [12, 3] for x in rows)


def test_predict_on_the_folder_imports_no_torch(ncnn_export, tiny_data):
    out, _ = ncnn_export
    got = predict_in_fresh_process(out / "model.fp16.ncnn", tiny_data / "val", top_k=2)
    assert got["torch"] is False and got["n"] == 12 and set(got["labels"]) <= set(CLASSES)


def test_threads_and_the_precision_options_are_honoured(ncnn_export):
    from tlexport.formats.ncnn.runtime import NcnnRuntime

    out, _ = ncnn_export
    for name, precision, threads in (("model.ncnn", "fp32", 1), ("model.fp16.ncnn", "fp16", 2)):
        rt = NcnnRuntime(out / name, precision, threads=threads).load()
        try:
            opt = rt.net.opt
            assert opt.num_threads == threads
            assert (opt.use_fp16_storage, opt.use_fp16_arithmetic) == ((precision == "fp16"),) * 2
            assert opt.use_winograd_convolution and opt.use_sgemm_convolution and opt.use_packing_layout
        finally:
            rt.close()


@pytest.mark.parametrize("size", [48, 64])
def test_other_image_sizes_run_unchanged(ncnn_export, fake_run, size):
    """ncnn is shape-agnostic: the folder exported at 48 px gives torch's logits at 64 px too (the
    shape hints only steer kernel choice). What --dynamic-size would rely on."""
    import torch

    from tlexport.formats.ncnn.runtime import NcnnRuntime
    from tlexport.models import load_run

    out, _ = ncnn_export
    model = load_run(fake_run).load_model("best", device="cpu")
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        ref = model(x).numpy()
    with NcnnRuntime(out / "model.ncnn", "fp32", threads=2) as rt:
        got = rt.run(x.numpy())
    assert got.shape == ref.shape == (3, 3)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_dynamic_size_export_is_verified_at_other_sizes(fake_run, tmp_path):
    """--dynamic-size: the same folder, verified by export against torch at sizes besides the crop."""
    import json

    r = invoke("export", fake_run, "--format", "ncnn", "--dynamic-size", "--out", tmp_path / "x")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    (a,) = [a for a in manifest["artifacts"] if a["format"] == "ncnn"]
    assert a["inputs"][0]["shape"] == [3, "height", "width"]
    sizes = a["verification"]["sizes"]
    assert len(sizes) >= 2 and all(s["passed"] for s in sizes) and [s["size"] for s in sizes] == manifest["verification"]["sizes"]


def test_int8_alone_is_refused_in_one_line_with_the_reason(fake_run, tmp_path):
    r = invoke("export", fake_run, "--format", "ncnn", "--precision", "int8", "--out", tmp_path / "x")
    assert r.exit_code == 1, r.output
    line = r.output.strip()
    assert "\n" not in line and "ncnn int8" in line and "ncnn2table" in line, line
    assert not (tmp_path / "x").exists()


def test_a_broken_folder_is_a_clear_error(ncnn_export, tmp_path):
    import shutil

    from tlexport.errors import RuntimeUnavailable, UsageError
    from tlexport.formats.metadata import read_metadata
    from tlexport.formats.ncnn.runtime import NcnnRuntime

    out, _ = ncnn_export
    lone = tmp_path / "model.ncnn"
    shutil.copytree(out / "model.ncnn", lone)
    (lone / "model.bin").unlink()
    with pytest.raises(RuntimeUnavailable, match="model.bin is missing from the folder"):
        NcnnRuntime(lone, "fp32").load()
    (lone / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(RuntimeUnavailable, match="ncnn cannot load .*model.bin"):
        NcnnRuntime(lone, "fp32").load()
    (lone / "model.param").write_text("not a param file\n")
    with pytest.raises(UsageError, match="is not an ncnn param file"):
        NcnnRuntime(lone, "fp32").load()
    (lone / "metadata.json").write_text("[" * 100000)
    with pytest.raises(UsageError, match="metadata.json is nested too deeply"):
        read_metadata(lone)


def test_a_side_file_larger_than_its_bound_is_refused_unread(ncnn_export, tmp_path, monkeypatch):
    import shutil

    from tlexport.errors import UsageError
    from tlexport.formats.metadata import read_metadata
    from tlexport.formats.ncnn import metadata

    out, _ = ncnn_export
    shutil.copytree(out / "model.ncnn", tmp_path / "model.ncnn")
    monkeypatch.setattr(metadata, "MAX_META_BYTES", 1 << 20)
    (tmp_path / "model.ncnn" / "metadata.json").write_text(" " * (1 << 20) + "{}")
    with pytest.raises(UsageError, match=r"metadata.json is too large \(more than 1048576 bytes\)"):
        read_metadata(tmp_path / "model.ncnn")


def test_an_operator_pnnx_left_unmapped_fails_the_export_in_one_line(tmp_path):
    """vit_b_16 and swin_t come out of pnnx with Tensor.reshape/Tensor.slice nodes ncnn has no layer
    for: the builder names them instead of handing ncnn a graph it cannot load."""
    from tlexport.errors import ExportError
    from tlexport.formats.ncnn.build import shape_hints

    folder = tmp_path / "model.ncnn"
    folder.mkdir()
    (folder / "model.param").write_text("7767517\n3 3\nInput in0 0 1 in0\nTensor.reshape r0 1 1 in0 1 0=-1\n"
                                        "Tensor.slice s0 1 1 1 out0\n")
    (folder / "model.bin").write_bytes(b"")
    with pytest.raises(ExportError, match=r"^pnnx could not map every operator of the model to an ncnn layer "
                                          r"\(left Tensor.reshape, Tensor.slice\): ncnn cannot run it$"):
        shape_hints(folder, 8)
