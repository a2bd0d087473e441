"""Untrusted JSON (and YAML) is read with bounds on size and nesting: a file of a hundred thousand
`[` is a one-line error naming the file, never a RecursionError (docs/security.md).

The bounded readers are `tlexport.fileio.read_json` / `parse_json` / `read_yaml`. The CLI tests
below feed a deep file to every command that reads one."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.errors import ArtifactError, UsageError
from tlexport.fileio import json_depth, parse_json, read_json, read_yaml

DEEP = "[" * 100_000  # the reported crash: parity died with "unexpected RecursionError"
TINY = ["--arch", "resnet18", "--weights", "none", "--image-size", "32"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(r, code: int, names: str) -> str:
    """One `Error:` line naming the file, the documented exit code, no traceback or crash."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "RecursionError" not in r.output and "unexpected" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and names in errors[0], r.output
    return errors[0]


# ---- the readers ----------------------------------------------------------------------------------
def test_deep_json_is_refused_before_the_parser_recurses(tmp_path):
    with pytest.raises(RecursionError):
        json.loads(DEEP + "]" * 100_000)  # what an unbounded reader meets
    path = tmp_path / "manifest.json"
    path.write_text(DEEP)
    with pytest.raises(ArtifactError, match="manifest.json is nested too deeply") as e:
        read_json(path)
    assert "\n" not in str(e.value)
    limit = sys.getrecursionlimit()
    try:  # the scan itself does not recurse: it works with almost no stack to spare
        sys.setrecursionlimit(60)
        assert json_depth((DEEP + "]" * 100_000).encode()) == 33  # stops counting past the limit
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("depth, ok", [(1, True), (32, True), (33, False)])
def test_the_depth_limit_is_exact(tmp_path, depth, ok):
    text = '{"a": ' * (depth - 1) + "[1]" + "}" * (depth - 1)
    if ok:
        assert parse_json(text, "x") is not None
    else:
        with pytest.raises(ArtifactError, match="more than 32 levels"):
            parse_json(text, "x")


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"name": "[" * 5000 + '"\\' + "{" * 5000, "list": ["]]]", "[[["]})
    assert json_depth(text.encode()) == 2
    assert parse_json(text, "x")["list"] == ["]]]", "[[["]


def test_size_limit_reads_no_more_than_the_limit(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"classes": ["a"] * 100}))
    assert read_json(path, max_bytes=10_000)["classes"] == ["a"] * 100
    with pytest.raises(ArtifactError, match="run.json is too large"):
        read_json(path, max_bytes=100)
    with pytest.raises(ArtifactError, match="too large"):
        parse_json("[" + "1," * 100 + "1]", "metadata", max_bytes=100)


def test_other_problems_are_one_line_with_the_callers_error_class(tmp_path):
    bad = tmp_path / "cfg.json"
    bad.write_text('{"a": 1,}')
    with pytest.raises(UsageError, match="cfg.json is not valid JSON") as e:
        read_json(bad, error=UsageError)
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "two.json").write_text("[] " + DEEP)  # a second value after the first: invalid, not deep
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_json(tmp_path / "two.json")


@pytest.mark.parametrize("text, words", [
    (DEEP, "nested too deeply"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)) + "  " * 40 + "v: 1\n", "nested too deeply"),
    ("base: &b [1, 2]\nmixup: *b\n", "alias"),
    ("lr: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("lr: [1, 2\n", "not valid YAML"),
])
def test_yaml_is_bounded_too(tmp_path, text, words):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=words) as e:
        read_yaml(path, error=UsageError)
    assert "\n" not in str(e.value) and "cfg.yaml" in str(e.value)


def test_yaml_options_read_as_before(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("arch: resnet18\nbatch-size: 8\naugment: false\nlr: 1.0e-3\n")
    assert read_yaml(path) == {"arch": "resnet18", "batch-size": 8, "augment": False, "lr": 1e-3}
    path.write_text("x: " + "y" * 200)
    with pytest.raises(ArtifactError, match="too large"):
        read_yaml(path, max_bytes=100)


# ---- a tiny classifier with tlexport metadata (no torch, no export) ---------------------------------
CLASSES = ["circle", "square", "triangle"]
PRE = {"resize": 8, "crop": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


def tiny_onnx(path, classes=None):
    """image [N,3,8,8] -> logits [N,3] (the channel means), carrying tlexport's metadata props;
    `classes` replaces the JSON text of tlexport.classes."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (("tlexport.classes", classes or json.dumps(CLASSES)), ("tlexport.preprocess", json.dumps(PRE))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.fixture
def export_copy(tmp_path):
    """An export folder: a real (tiny) model.onnx and a manifest of a hundred thousand `[`."""
    folder = tmp_path / "export"
    folder.mkdir()
    tiny_onnx(folder / "model.onnx")
    (folder / "manifest.json").write_text(DEEP)
    return folder


@pytest.fixture
def deep_run(tmp_path, fake_run):
    """A copy of the fake run whose run.json or split.json the test replaces."""
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    return run


# ---- manifest.json: parity, bench, predict ---------------------------------------------------------


@pytest.mark.parametrize("command", [
    pytest.param(["parity", "{export}", "--run-dir", "{run}", "--random", "2"]),
    pytest.param(["bench", "{export}", "--run-dir", "{run}", "--iters", "1", "--warmup", "0"]),
    pytest.param(["predict", "{export}", "{images}"]),  # it reads the manifest for the fastest file
], ids=lambda c: c[0])
def test_a_deep_manifest_is_one_line(export_copy, fake_run, tiny_data, command):
    args = [{"{export}": export_copy, "{run}": fake_run, "{images}": tiny_data / "val"}.get(a, a) for a in command]
    refused(invoke(*args), 1, "manifest.json")


def test_predict_of_a_model_file_does_not_read_the_manifest(export_copy, tiny_data):
    r = invoke("predict", export_copy / "model.onnx", tiny_data / "val" / "circle", "--json")
    assert r.exit_code == 0, r.output
    assert {row["top"][0]["label"] for row in json.loads(r.stdout)} <= set(CLASSES)


# ---- run.json and split.json: eval, export, resume, parity -----------------------------------------


@pytest.mark.parametrize("name, command", [
    pytest.param("run.json", ["eval", "{run}"]),
    pytest.param("run.json", ["export", "{run}", "--out", "{out}"]),
    pytest.param("run.json", ["parity", "{export}", "--run-dir", "{run}", "--random", "2"]),
    pytest.param("run.json", ["train", "--resume", "{run}"]),
    pytest.param("split.json", ["eval", "{run}"]),
    pytest.param("split.json", ["parity", "{export}", "--run-dir", "{run}"]),
], ids=lambda v: v if isinstance(v, str) else v[0])
def test_a_deep_run_file_is_one_line(deep_run, export_copy, tmp_path, name, command):
    (deep_run / name).write_text(DEEP)
    (export_copy / "manifest.json").unlink()
    args = [{"{export}": export_copy, "{run}": deep_run, "{out}": tmp_path / "out"}.get(a, a) for a in command]
    refused(invoke(*args), 1, name)
    assert not (tmp_path / "out").exists()


# ---- metadata embedded in a model: predict, parity --------------------------------------------------
def test_deep_onnx_metadata_is_one_line(tmp_path, tiny_data):
    model = tiny_onnx(tmp_path / "model.onnx", classes=DEEP)
    line = refused(invoke("predict", model, tiny_data / "val" / "circle"), 1, "model.onnx")
    assert "classes" in line


def test_deep_openvino_metadata_is_an_artifact_error(tmp_path):
    from tlexport.formats.metadata import read_metadata

    xml = tmp_path / "model.xml"
    xml.write_text(f'<net name="m" version="11"><rt_info><tlexport><metadata value="{DEEP}"/></tlexport></rt_info></net>')
    with pytest.raises(ArtifactError, match="model.xml"):
        read_metadata(xml)


# ---- --config: train, lr-find -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("command", [
    pytest.param(["train", "--data", "{data}", *TINY, "--out", "{out}"], id="train"),
    pytest.param(["lr-find", "--data", "{data}", *TINY], id="lr-find"),
])
def test_a_deep_config_is_one_line_bad_usage(tmp_path, tiny_data, command, suffix):
    config = tmp_path / f"options{suffix}"
    config.write_text(DEEP)
    args = [{"{data}": tiny_data, "{out}": tmp_path / "out"}.get(a, a) for a in command]
    refused(invoke(*args, "--config", config), 2, config.name)
    assert not (tmp_path / "out").exists()
