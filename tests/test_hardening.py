"""Input from files is input: manifests, embedded metadata, extreme images, interrupted and
resumed runs, full disks. One test per class of problem, through the real entry points."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlexport.cli import cli
from tlexport.errors import ArtifactError
from tlexport.formats.onnx import metadata as onnx_md
from tlexport.tables import metadata as md

from test_export import full_export

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "resnet18", "--weights", "none", "--batch-size", "8", "--image-size", "32", "--workers", "0"]
CLASSES = ["circle", "square", "triangle"]
PRE = {"resize": 55, "crop": 48, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "interpolation": "bilinear"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(r, *words):
    """A non-zero exit with exactly one line, `Error: ...`, naming every word."""
    assert r.exit_code != 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output, r.output
    for w in words:
        assert w in lines[0], (w, r.output)
    return lines[0]


@pytest.fixture(scope="session")
def exported(fake_run, tmp_path_factory):
    return full_export(fake_run, tmp_path_factory)


def strip_png(path: Path, w: int = 1, h: int = 20000) -> Path:
    """A ~140-byte PNG whose resize to the short side would need gigabytes."""
    from PIL import Image

    Image.new("RGB", (w, h), (200, 10, 10)).save(path, optimize=True)
    return path


# ---- 1. trust policy: manifests and links ---------------------------------------------------------
def _folder_with_manifest(tmp_path: Path, exported: Path, entries) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    shutil.copy(exported / "model.onnx", folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps({"artifacts": entries}))
    return folder


@pytest.mark.parametrize("name", ["../outside/model.pt2", "../outside/model.onnx", "/tmp/x/model.onnx",
                                  "sub/../../outside/model.ts", "link.onnx", "linkdir/model.pt2"])
def test_manifest_entries_outside_the_folder_are_refused_even_with_trust_code(tmp_path, exported, name,
                                                                              monkeypatch):
    from tlexport import runtimes
    from tlexport.formats.pt2.runtime import PT2Runtime
    from tlexport.formats.torchscript.runtime import TorchScriptRuntime

    outside = tmp_path / "outside"
    outside.mkdir()
    for f in ("model.pt2", "model.onnx", "model.ts"):
        (outside / f).write_bytes(b"not a model")
    fmt = {".pt2": "pt2", ".onnx": "onnx", ".ts": "torchscript"}[Path(name).suffix]
    folder = _folder_with_manifest(tmp_path, exported, [
        {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
        {"file": name, "format": fmt, "precision": "fp32"}])
    (folder / "link.onnx").symlink_to(outside / "model.onnx")
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    for cls in (PT2Runtime, TorchScriptRuntime):
        monkeypatch.setattr(cls, "_load", lambda self: pytest.fail(f"loaded {self.artifact}"))
    found, skipped = runtimes.discover(folder, names=["onnxruntime", "pt2", "torchscript"], trust_code=True)
    assert [r.artifact.name for r in found] == ["model.onnx"]
    refused = [s for s in skipped if "refused" in s.reason]
    assert refused and all(name in s.reason and "manifest.json" in s.reason for s in refused)


def test_link_with_a_fixed_name_is_refused_without_a_manifest_and_by_predict(tmp_path, exported):
    from tlexport import runtimes

    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(exported / "model.onnx")  # a real model, but outside
    found, skipped = runtimes.discover(folder, names=["onnxruntime"])
    assert found == [] and "leads outside" in skipped[0].reason
    r = invoke("predict", folder, exported)
    one_line_error(r, "model.onnx", "outside")


MALFORMED = [
    ("[1, 2]", "must be a JSON object"),
    ('{"artifacts": {"file": "model.onnx"}}', "'artifacts' must be a list"),
    ('{"artifacts": ["model.onnx"]}', "artifacts[0] must be an object"),
    ('{"artifacts": [{"format": "onnx", "precision": "fp32"}]}', "artifacts[0] has no 'file'"),
    ('{"artifacts": [{"file": 7, "format": "onnx", "precision": "fp32"}]}', "artifacts[0].file must be a str"),
    ('{"artifacts": [{"file": "model.onnx", "format": "onnx", "precision": 32}]}', "artifacts[0].precision"),
    ('{"artifacts": [{"file": "model.onnx", "format": "exe", "precision": "fp32"}]}', "artifacts[0].format"),
    ('{"artifacts": [{"file": "model.onnx", "format": "onnx", "precision": "fp32", "devices": "cpu"}]}',
     "artifacts[0].devices"),
    ('{"artifacts": [{"file": "model.onnx", "format": "pt2", "precision": "fp32"}]}', "suffix"),
    ('{"artifacts": [', "is not valid JSON"),
]


@pytest.mark.parametrize("text,field", MALFORMED)
def test_malformed_manifest_is_a_one_line_error_naming_the_field(tmp_path, text, field):
    from tlexport.tables.artifacts import list_artifacts

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError) as e:
        list_artifacts(tmp_path)
    assert "manifest.json" in str(e.value) and field in str(e.value) and "\n" not in str(e.value)


def test_malformed_manifest_through_parity_and_bench(tmp_path, exported, fake_run):
    folder = _folder_with_manifest(tmp_path, exported, [{"format": "onnx", "precision": "fp32"}])
    for cmd in ("parity", "bench"):
        r = invoke(cmd, folder, "--run-dir", fake_run, "--runtime", "onnxruntime",
                   *(["--random", 2] if cmd == "parity" else ["--iters", 1, "--warmup", 0]))
        one_line_error(r, "manifest.json", "file")


# ---- 2. metadata schema -----------------------------------------------------------------------------
class Raw(str):
    """A metadata value stored as is (not JSON-encoded): e.g. text that is not JSON at all."""


def _tampered(tmp_path: Path, exported: Path, **changes) -> Path:
    """model.onnx with some `tlexport.*` props replaced (None: removed); raw strings kept as is."""
    import onnx

    proto = onnx.load(str(exported / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        key = "tlexport." + key
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value if isinstance(value, Raw) else json.dumps(value)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    path = tmp_path / "tampered.onnx"
    onnx.save(proto, str(path))
    return path


TAMPERED = [
    ({"classes": {"a": 1, "b": 2, "c": 3}}, "classes"),
    ({"classes": [1, 2, 3]}, "classes[0]"),
    ({"classes": ["a", "b"]}, "outputs 3 logits"),
    ({"classes": ["a", "b", "c", "d"]}, "outputs 3 logits"),
    ({"classes": ["a", "a", "b"]}, "twice"),
    ({"preprocess": {**PRE, "std": [0.2, 0.0, 0.2]}}, "preprocess.std"),
    ({"preprocess": {**PRE, "resize": 10 ** 9}}, "preprocess.resize"),
    ({"preprocess": {k: v for k, v in PRE.items() if k != "resize"}}, "preprocess.resize"),
    ({"preprocess": {**PRE, "interpolation": "lanczos7"}}, "preprocess.interpolation"),
    ({"preprocess": {**PRE, "crop": 64, "resize": 50}}, "preprocess.crop"),
    ({"preprocess": {**PRE, "mean": [0.5, "x", 0.5]}}, "preprocess.mean"),
    ({"preprocess": Raw("{not json")}, "preprocess"),
    ({"classes": None}, "classes"),
    ({"batch": -3}, "batch"),
]


@pytest.mark.parametrize("changes,field", TAMPERED)
def test_metadata_schema_names_the_bad_field(changes, field):
    """What every reader gets from the ONNX props (the width check is the runtime's, below)."""
    props = {k: v if isinstance(v, Raw) else json.dumps(v)
             for k, v in {"tlexport.classes": CLASSES, "tlexport.preprocess": PRE, "tlexport.batch": "dynamic",
                          **{"tlexport." + k: v for k, v in changes.items()}}.items() if v is not None}
    with pytest.raises(ArtifactError, match=field.replace("[", r"\[").replace(".", r"\.")) as e:
        meta = md.require(onnx_md.from_onnx_props(props, "m.onnx"), "m.onnx")
        md.check_output_width(meta, 3, "m.onnx")
    assert str(e.value).startswith("m.onnx") and "\n" not in str(e.value)


@pytest.mark.parametrize("changes,field", [TAMPERED[i] for i in (0, 2, 3, 5, 7)])
def test_predict_refuses_tampered_metadata_naming_the_field(tmp_path, exported, tiny_data, changes, field):
    model = _tampered(tmp_path, exported, **changes)
    r = invoke("predict", model, tiny_data / "val" / "circle")
    line = one_line_error(r, field)
    assert "tampered.onnx" in line


def test_every_runtime_checks_class_count_against_output_width(tmp_path, exported):
    """Runtime.run is what predict, parity and bench call: the check lives there once."""
    from tlexport.runtimes import for_artifact

    model = _tampered(tmp_path, exported, classes=["a", "b"])
    with pytest.raises(ArtifactError, match="classes.*2 names.*3 logits"):
        for_artifact(model).load().run(np.zeros((1, 3, 48, 48), np.float32))


def test_parity_fails_the_row_of_an_artifact_with_bad_metadata(tmp_path, exported, fake_run):
    folder = tmp_path / "exp"
    folder.mkdir()
    shutil.move(_tampered(tmp_path, exported, preprocess={**PRE, "std": [0.2, 0, 0.2]}), folder / "model.onnx")
    report = tmp_path / "parity.json"
    r = invoke("parity", folder, "--run-dir", fake_run, "--runtime", "onnxruntime", "--random", 2, "--json", report)
    assert r.exit_code == 1, r.output
    row = next(x for x in json.loads(report.read_text())["results"] if x["runtime"] == "onnxruntime")
    assert any("preprocess.std" in f for f in row["failures"]), row


def test_edge_app_validates_metadata_and_skips_extreme_images(tmp_path, exported, tiny_data):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(next((tiny_data / "val" / "circle").iterdir()), photos / "good.png")
    strip_png(photos / "strip.png")
    app = [sys.executable, str(ROOT / "examples" / "edge_app.py")]
    ok = subprocess.run(app + [str(exported / "model.onnx"), str(photos)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "good.png: " in ok.stdout and "strip.png: cannot read (extreme aspect ratio" in ok.stderr
    bad = _tampered(tmp_path, exported, preprocess={**PRE, "std": [0, 0, 0]})
    r = subprocess.run(app + [str(bad), str(photos)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "preprocess.std" in r.stderr, r.stderr


# hypothesis: the parser either returns values that satisfy every rule or raises ArtifactError
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                       lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                       max_leaves=12)
NUM = st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=2))
PRE_LIKE = st.fixed_dictionaries({}, optional={
    "resize": NUM, "crop": NUM, "mean": st.lists(NUM, max_size=4), "std": st.lists(NUM, max_size=4),
    "interpolation": st.sampled_from(["bilinear", "bicubic", "nearest", "lanczos", ""]) | JSONISH,
    "color_order": st.sampled_from(["RGB", "BGR"]), "value_range": st.sampled_from([[0, 1], [0, 255]])})
META_LIKE = st.fixed_dictionaries({}, optional={
    "classes": st.lists(st.text(max_size=3) | NUM, max_size=5) | JSONISH,
    "preprocess": PRE_LIKE | JSONISH, "batch": NUM | st.just("dynamic") | JSONISH, "arch": JSONISH})


def _holds_every_rule(meta: dict) -> None:
    import math

    from tlexport.data.preprocess import Preprocess

    if "classes" in meta:
        c = meta["classes"]
        assert isinstance(c, list) and 1 <= len(c) and all(isinstance(x, str) and x for x in c)
        assert len(set(c)) == len(c)
    if "preprocess" in meta:
        p = meta["preprocess"]
        assert 1 <= p["crop"] <= p["resize"] <= md.MAX_SIDE
        assert all(math.isfinite(v) for v in p["mean"]) and all(math.isfinite(v) and v > 0 for v in p["std"])
        assert p["interpolation"] in md.INTERPOLATIONS
        Preprocess.from_dict(p)  # and the one definition of preprocessing accepts it
    if "batch" in meta:
        assert meta["batch"] == "dynamic" or (type(meta["batch"]) is int and meta["batch"] >= 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(META_LIKE)
def test_metadata_parser_accepts_only_what_satisfies_the_schema(meta):
    try:
        out = md.validate(meta, "x.onnx")
    except ArtifactError as e:
        assert str(e).startswith("x.onnx: metadata") and "\n" not in str(e)
        return
    _holds_every_rule(out)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(onnx_md.ONNX_KEYS)), st.text(max_size=40), max_size=7))
def test_onnx_props_parser_never_fails_with_anything_but_artifact_error(props):
    try:
        _holds_every_rule(onnx_md.from_onnx_props(props, "m.onnx"))
    except ArtifactError as e:
        assert "m.onnx" in str(e) and "\n" not in str(e)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True),
       st.integers(1, md.MAX_SIDE), st.integers(0, 64),
       st.lists(st.floats(-10, 10), min_size=3, max_size=3), st.lists(st.floats(1e-3, 10), min_size=3, max_size=3),
       st.sampled_from(md.INTERPOLATIONS))
def test_metadata_that_tlexport_writes_round_trips(classes, crop, extra, mean, std, interp):
    pre = {"resize": min(crop + extra, md.MAX_SIDE), "crop": crop, "mean": mean, "std": std, "interpolation": interp}
    meta = {"classes": classes, "preprocess": pre, "batch": "dynamic"}
    props = {k: json.dumps(meta[f]) for k, f in onnx_md.ONNX_KEYS.items() if f in meta}
    assert onnx_md.from_onnx_props(props) == md.validate(meta) == {**meta, "preprocess": pre}


# ---- 4. extreme sizes -------------------------------------------------------------------------------
def test_extreme_aspect_ratio_is_skipped_by_predict_and_parity_the_rest_goes_on(tmp_path, exported, fake_run, tiny_data):
    photos = tmp_path / "photos"
    (photos / "circle").mkdir(parents=True)
    good = next((tiny_data / "val" / "circle").iterdir())
    shutil.copy(good, photos / "circle" / "good.png")
    strip = strip_png(photos / "circle" / "strip.png")
    assert strip.stat().st_size < 400
    r = invoke("predict", exported / "model.onnx", photos, "--json")
    assert r.exit_code == 1, r.output  # documented: 1 when some image could not be read
    assert [Path(x["image"]).name for x in json.loads(r.stdout)] == ["good.png"]
    assert "strip.png: extreme aspect ratio: 1x20000" in r.stderr
    report = tmp_path / "parity.json"
    r = invoke("parity", exported, "--run-dir", fake_run, "--runtime", "onnxruntime", "--data", photos,
               "--json", report)
    assert r.exit_code == 0, r.output
    assert [s["image"] for s in json.loads(report.read_text())["skipped_images"]] == ["circle/strip.png"]


def test_skipped_txt_escapes_tab_newline_and_lists_extreme_images(tmp_path, tiny_data):
    from tlexport.data.folders import read_skipped

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    odd = data / "train" / "circle" / "tab\there\nnewline\\back.png"
    odd.write_bytes(b"garbage")
    strip_png(data / "train" / "square" / "strip.png")
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    text = (out / "skipped.txt").read_text()
    assert len(text.splitlines()) == 2 and all(line.count("\t") == 1 for line in text.splitlines())
    rows = dict(read_skipped(out / "skipped.txt"))
    assert rows[str(odd)].startswith("not an image")
    assert rows[str(data / "train" / "square" / "strip.png")].startswith("extreme aspect ratio")


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_split_with_an_empty_side_is_refused_before_training(tmp_path, layout):
    from tlexport.data.synth import make_dataset

    data = make_dataset(tmp_path / "d", classes=("circle", "square"), per_class=1, val_per_class=1, size=32,
                        split=layout == "split")
    if layout == "split":
        for f in (data / "train" / "square").iterdir():
            f.unlink()
    r = invoke("train", "--data", data, *TINY, "--epochs", 1, "--out", tmp_path / "run", "--quiet")
    line = one_line_error(r)
    assert ("at least 2 images" in line) if layout == "flat" else ("no training image for class(es) square" in line)
    assert not (tmp_path / "run").exists()


def test_last_training_batch_of_one_image_does_not_crash_batchnorm(tmp_path):
    """2 classes x 3 images split into 4 train + 2 val; batches of 3 leave one image for the last
    batch, at 32 px where resnet's last BatchNorm sees 1x1 maps."""
    from tlexport.data.synth import make_dataset

    data = make_dataset(tmp_path / "d", classes=("circle", "square"), per_class=3, size=32)
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *TINY[:4], "--batch-size", 3, "--image-size", 32, "--workers", 0,
               "--epochs", 1, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["history"][0]["train_loss"] > 0


# ---- 3. runs: stopped before the first checkpoint, resume on changed data, devices ----------------
def test_run_killed_before_its_first_checkpoint_has_a_way_forward(tmp_path, tiny_data, monkeypatch):
    from tlexport.training import session

    out = tmp_path / "run"
    monkeypatch.setattr(session.Session, "loop", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    assert invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out).exit_code == 130
    monkeypatch.undo()
    assert (out / "run.json").is_file() and not (out / "checkpoint.pt").exists()
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    one_line_error(r, f"--resume {out}", "--overwrite", "before its first checkpoint")
    r = invoke("train", "--resume", out, "--json")
    assert r.exit_code == 0, r.output
    assert [h["epoch"] for h in json.loads(r.stdout)["history"]] == [1]
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    one_line_error(r, "already holds a run", "--overwrite")
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--overwrite",
               "--json")
    assert r.exit_code == 0, r.output


def test_resume_keeps_the_recorded_split_and_reports_changes_on_disk(tmp_path, tiny_data):
    data = tmp_path / "data"
    for split in ("train", "val"):  # a flat folder: the split is tlexport's own
        for c in CLASSES:
            shutil.copytree(tiny_data / split / c, data / c, dirs_exist_ok=True)
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    before = json.loads((out / "split.json").read_text())
    gone = data / before["val"][0][0]
    gone.unlink()
    shutil.copy(data / before["train"][0][0], data / "circle" / "zz-new.png")
    r = invoke("train", "--resume", out, "--epochs", 2, "--json")
    assert r.exit_code == 0, r.output
    notes = " ".join(json.loads(r.stdout)["notes"])
    assert "1 new file(s)" in notes and "circle/zz-new.png" in notes
    assert "1 recorded file(s) are gone" in notes and before["val"][0][0] in notes
    after = json.loads((out / "split.json").read_text())
    assert after["train"] == before["train"] and after["val"] == before["val"][1:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["val_images"] == len(after["val"]) and meta["data"]["train_images"] == len(after["train"])


def test_resume_takes_device_and_workers_from_the_command_line(tmp_path, tiny_data):
    out = tmp_path / "run"
    r = invoke("train", "--data", tiny_data, *TINY, "--epochs", 1, "--max-steps", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "run.json").read_text())
    meta["options"]["device"], meta["options"]["workers"] = "cuda:1", 7  # as if trained on a 2-GPU box
    (out / "run.json").write_text(json.dumps(meta))
    r = invoke("train", "--resume", out, "--epochs", 2, "--device", "cpu", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["device"] == "cpu"
    assert json.loads((out / "run.json").read_text())["options"]["device"] == "cpu"
    r = invoke("train", "--resume", out, "--lr", "0.5")
    assert r.exit_code == 2 and "--lr cannot be given with --resume" in r.output


def test_cuda_rng_restore_tolerates_another_gpu_count(monkeypatch):
    import torch

    from tlexport.training.checkpoint import restore_rng

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("would fail: 2 states, 1 GPU"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((device, s[0].item())))
    state = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "cuda": [torch.full((16,), 7, dtype=torch.uint8),
                                                    torch.full((16,), 9, dtype=torch.uint8)],
           "python": list(__import__("random").getstate()[1]),
           "numpy": torch.from_numpy(state[1].astype("int64")), "numpy_pos": int(state[2])}
    restore_rng(rng)
    assert restored == [(0, 7)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed on a CPU-only machine
    restored.clear()
    restore_rng(rng)
    assert restored == []


def test_stale_lock_of_a_dead_process_does_not_block_and_live_one_does(tmp_path):
    from tlexport.fileio import FolderLocked, clean_stale, folder_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / ".tlexport.lock").write_text(f"{pid} host\n")
    (tmp_path / f".checkpoint.pt.tmp-{pid}").write_bytes(b"x")
    (tmp_path / f".tlexport-staging-{pid}").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / f".model.onnx.tmp-{live.pid}").write_bytes(b"x")  # a live writer's: kept
        with folder_lock(tmp_path, "export"):
            assert sorted(p.name for p in clean_stale(tmp_path)) == sorted(
                [f".checkpoint.pt.tmp-{pid}", f".tlexport-staging-{pid}"])
            holder = subprocess.run(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); from tlexport.fileio import "
                 "folder_lock; folder_lock(sys.argv[1], 'export').__enter__()", str(tmp_path), str(ROOT)],
                capture_output=True, text=True)
            assert holder.returncode != 0 and "being written by another tlexport export" in holder.stderr
            with pytest.raises(FolderLocked):  # also within one process
                with folder_lock(tmp_path):
                    pass
        assert (tmp_path / f".model.onnx.tmp-{live.pid}").exists() and not (tmp_path / ".tlexport.lock").exists()
    finally:
        live.kill()
        live.wait()


# ---- 5. disk full while writing TorchScript / .pt2 -------------------------------------------------
@pytest.mark.parametrize("fmt,file", [("torchscript", "model.ts"), ("pt2", "model.pt2")])
def test_disk_full_during_code_archive_export_is_one_line_and_leaves_nothing(tmp_path, fake_run, fmt, file,
                                                                              monkeypatch):
    import tlexport.fileio as fileio

    def full(f, data):
        f.write(data[: len(data) // 2])  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "_write", full)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = invoke("export", fake_run, "--out", out, "--format", fmt, "--no-verify")
    one_line_error(r, file, "no space left")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no staging, no partial file, no lock
