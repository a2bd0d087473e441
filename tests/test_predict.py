"""`tlexport predict`: torch-free ONNX path, torchvision agreement, bad images, CLI contract."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import predict_in_fresh_process
from test_export import full_export

from tlexport.cli import cli


@pytest.fixture(scope="session")
def exported(fake_run, tmp_path_factory):
    return full_export(fake_run, tmp_path_factory)


@pytest.fixture()
def photos(tmp_path):
    """Generated images of assorted sizes and aspect ratios (resize + crop both matter)."""
    from tlexport.data.synth import draw_shape

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = random.Random(5)
    for i, (w, h) in enumerate([(64, 48), (48, 80), (200, 120), (37, 53), (96, 96), (150, 300)]):
        img = draw_shape(["circle", "square", "triangle"][i % 3], 160, rng).resize((w, h))
        img.save(folder / f"p{i}.png")
    return folder


def test_onnx_predict_imports_no_torch(exported, photos):
    got = predict_in_fresh_process(exported / "model.onnx", photos, top_k=2)
    assert got["torch"] is False and got["n"] == 6
    assert len(got["top"]) == 2 and got["top"][0]["label"] in ("circle", "square", "triangle")
    assert got["top"][0]["prob"] >= got["top"][1]["prob"]


def test_top1_agrees_with_torchvision_eval_transform(exported, fake_run, photos):
    import torch

    from tlexport.data.images import load_rgb
    from tlexport.inference import predict
    from tlexport.models import load_run

    run = load_run(fake_run)
    model, transform = run.load_model(), run.preprocess.eval_transform()
    result = predict(exported, [photos])
    assert not result.errors and len(result.results) == 6
    for r in result.results:
        img = load_rgb(r["image"])
        x = transform(img)
        assert np.abs(x.numpy() - run.preprocess.to_array(img)).max() < 0.05  # same pixels, rounding aside
        with torch.inference_mode():
            probs = torch.softmax(model(x[None]), 1)[0].numpy()
        assert r["top"][0]["index"] == int(probs.argmax()), r["image"]
        assert abs(r["top"][0]["prob"] - float(probs.max())) < 1e-2


def test_corrupt_image_is_named_and_others_classified(exported, photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    r = CliRunner().invoke(cli, ["predict", str(exported), str(photos), "--json", "--top-k", "3"])
    assert r.exit_code == 1, r.output
    listed = json.loads(r.stdout)
    assert len(listed) == 6 and all(len(x["top"]) == 3 for x in listed)
    assert {"label", "index", "prob"} == set(listed[0]["top"][0])
    assert "broken.jpg" in r.stderr and "Traceback" not in r.output
    # a path that does not exist is bad usage (README: exit 2), refused before anything is classified
    r = CliRunner().invoke(cli, ["predict", str(exported), str(photos), str(photos / "missing.png"), "--json"])
    assert r.exit_code == 2 and r.stdout == "" and "missing.png does not exist" in r.stderr, r.output


def test_cli_exit_0_table_and_explicit_torchscript(exported, photos):
    one = str(photos / "p0.png")
    r = CliRunner().invoke(cli, ["predict", str(exported / "model.onnx"), one])
    assert r.exit_code == 0, r.output
    assert "p0.png" in r.stdout
    onnx_top = CliRunner().invoke(cli, ["predict", str(exported / "model.onnx"), one, "--json"])
    ts_top = CliRunner().invoke(cli, ["predict", str(exported / "model.ts"), one, "--json"])
    assert ts_top.exit_code == 0, ts_top.output
    a, b = json.loads(onnx_top.stdout)[0]["top"], json.loads(ts_top.stdout)[0]["top"]
    assert [t["index"] for t in a] == [t["index"] for t in b]


def test_in_graph_model_predicts_like_float_model(exported, photos):
    from tlexport.inference import predict

    a = predict(exported / "model.onnx", [photos])
    b = predict(exported / "model.uint8.onnx", [photos])
    assert [x["top"][0]["index"] for x in a.results] == [x["top"][0]["index"] for x in b.results]
    # The in-graph resize may round a pixel one level the other way from Pillow (docs/deploy.md).
    assert max(abs(x["top"][0]["prob"] - y["top"][0]["prob"]) for x, y in zip(a.results, b.results)) < 1e-3


def test_folder_without_onnx_refuses_to_load_code(exported, tmp_path, photos):
    folder = tmp_path / "only_ts"
    folder.mkdir()
    shutil.copy(exported / "model.ts", folder)
    r = CliRunner().invoke(cli, ["predict", str(folder), str(photos)])
    assert r.exit_code == 2 and "name such a file explicitly" in r.output, r.output
    r = CliRunner().invoke(cli, ["predict", str(exported), str(tmp_path / "empty_dir_missing")])
    assert r.exit_code == 2 and "empty_dir_missing does not exist" in r.output, r.output


def test_batches_go_as_files_are_decoded_and_results_keep_file_order(exported, photos, monkeypatch):
    """The first file's decode is held until the last one is done, and the last one is held
    until a batch has been classified: only a predict that batches files as they arrive
    finishes, and its results must still be listed in file order."""
    import threading
    from pathlib import Path

    from tlexport.data.preprocess import Preprocess
    from tlexport.inference import predict

    names = sorted(p.name for p in photos.iterdir())
    first_batch, last_done, held = threading.Event(), threading.Event(), []
    load = Preprocess.load

    def gated(self, source):
        name = Path(source).name
        if name == names[0]:
            held.append(last_done.wait(60))  # the bound only keeps a wrong predict from hanging
        if name == names[-1]:
            held.append(first_batch.wait(60))
        out = load(self, source)
        if name == names[-1]:
            last_done.set()
        return out

    calls = []

    def progress(done, total):
        calls.append((done, total))
        first_batch.set()

    monkeypatch.setattr(Preprocess, "load", gated)
    result = predict(exported / "model.onnx", [photos], batch_size=2, workers=2, progress=progress)
    assert held == [True, True]
    assert [Path(r["image"]).name for r in result.results] == names
    assert calls[-1] == (6, 6) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    plain = predict(exported / "model.onnx", [photos], batch_size=6, workers=1)
    for a, b in zip(result.results, plain.results):
        assert a["image"] == b["image"] and abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-5


def test_decoding_runs_at_most_two_batches_ahead(exported, photos, monkeypatch):
    import shutil
    import threading

    from tlexport.data.preprocess import Preprocess
    from tlexport.inference import predict

    for i in range(4):
        shutil.copytree(photos, photos / f"copy{i}", ignore=shutil.ignore_patterns("copy*"))
    started, lock, ahead = [], threading.Lock(), []
    load = Preprocess.load

    def counted(self, source):
        with lock:
            started.append(source)
        return load(self, source)

    monkeypatch.setattr(Preprocess, "load", counted)
    result = predict(exported / "model.onnx", [photos], batch_size=2, workers=2,
                     progress=lambda done, total: ahead.append(len(started) - done))
    assert len(result.results) == 30 and max(ahead) <= 2 * 2 + 2
