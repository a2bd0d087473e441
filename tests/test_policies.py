"""One policy per concern: the same mistake gets the same exit code and one `Error:` line in every
command that can meet it (tlexport/cli/policies.py, docs/cli.md). Each test runs every command
with that concern through the CLI, as a user types it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlexport.cli import cli

TINY = ["--arch", "resnet18", "--weights", "none", "--image-size", "32"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(r, code: int) -> str:
    """The run ended with `code`, no traceback, and exactly one `Error:` line, which is returned.
    (Click's own usage errors also print the usage line and a help hint above it.)"""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    return errors[0]


@pytest.fixture
def places(tmp_path, fake_run, tiny_data):
    """Paths the cases name: a folder that looks like an export (never loaded: every case fails
    before), an empty folder, a file, a missing path, the fake run and the tiny data."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"not read: the command stops before loading it")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    return {"{export}": export, "{empty}": tmp_path / "empty", "{file}": tmp_path / "afile",
            "{missing}": tmp_path / "missing", "{run}": fake_run, "{data}": tiny_data,
            "{out}": tmp_path / "out"}


def run_case(places, args):
    return invoke(*[places.get(a, a) for a in args])


# ---- a path that does not exist, or is a file where a folder is needed: exit 2 -------------------


@pytest.mark.parametrize("args", [
    ["parity", "{missing}"],
    ["parity", "{file}"],
    ["parity", "{export}", "--data", "{missing}"],
    ["parity", "{export}", "--run-dir", "{missing}"],
    ["bench", "{missing}"],
    ["bench", "{file}"],
    ["bench", "{export}", "--run-dir", "{missing}"],
    ["predict", "{missing}", "{data}"],
    ["export", "{run}", "--precision", "int8", "--calib-data", "{missing}", "--out", "{out}"],
    ["train", "--resume", "{missing}"],
    ["train", "--data", "{data}", "--config", "{missing}", *TINY],
    ["lr-find", "--data", "{data}", "--config", "{missing}", *TINY],
    ["eval", "{missing}"],
    ["export", "{missing}", "--out", "{out}"],
    ["eval", "{run}", "--data", "{missing}"],
    ["train", "--data", "{missing}", *TINY, "--out", "{out}"],
    ["train", "--data", "{file}", *TINY, "--out", "{out}"],
    ["lr-find", "--data", "{missing}", *TINY],
], ids=lambda a: " ".join(a[:4]))
def test_a_missing_path_is_bad_usage_in_every_command(places, args):
    line = one_error_line(run_case(places, args), 2)
    assert "does not exist" in line or "no such file" in line or "is a file" in line or "not a folder" in line \
        or "resume" in line, line
    assert not (places["{out}"]).exists()  # nothing was created for a command that could not start


# ---- a folder that is not what the command reads (an export, a run): exit 2 ----------------------


EXPORT_WORDS = ("not a tlexport export", "holds no ONNX model")
RUN_WORDS = ("not a tlexport run", "run.json")


@pytest.mark.parametrize("args, words", [
    (["parity", "{empty}"], EXPORT_WORDS),
    (["parity", "{data}"], EXPORT_WORDS),
    (["bench", "{empty}"], EXPORT_WORDS),
    (["predict", "{empty}", "{data}"], EXPORT_WORDS),
    (["parity", "{export}", "--run-dir", "{empty}"], RUN_WORDS),
    (["bench", "{export}", "--run-dir", "{empty}"], RUN_WORDS),
    (["train", "--resume", "{empty}"], RUN_WORDS),
    (["eval", "{empty}"], RUN_WORDS),
    (["export", "{empty}", "--out", "{out}"], RUN_WORDS),
], ids=lambda a: " ".join(a[:4]) if isinstance(a, list) else "")
def test_a_folder_that_is_not_an_export_or_a_run_is_bad_usage(places, args, words):
    line = one_error_line(run_case(places, args), 2)
    assert any(w in line for w in words), line


# ---- --device cuda without a GPU: exit 1, before any work ----------------------------------------
@pytest.mark.parametrize("args", [
    ["parity", "{export}", "--device", "cuda"],
    ["parity", "{export}", "--devices", "cpu,cuda"],
    ["bench", "{export}", "--device", "cuda"],
    ["eval", "{run}", "--device", "cuda"],
    ["train", "--data", "{data}", *TINY, "--epochs", "1", "--max-steps", "1", "--device", "cuda", "--out", "{out}"],
    ["lr-find", "--data", "{data}", *TINY, "--device", "cuda"],
    ["export", "{run}", "--device", "cuda", "--out", "{out}"],
], ids=lambda a: " ".join(a[:2] + a[-4:-2]))
def test_cuda_without_a_gpu_is_one_line_and_exit_1(places, args):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_error_line(run_case(places, args), 1)
    assert "no CUDA GPU" in line, line
    assert not places["{out}"].exists()


def test_require_gpu_passes_cpu_and_auto_without_importing_torch(monkeypatch):
    import sys

    from tlexport.errors import NoGPU, RuntimeUnavailable, require_gpu

    monkeypatch.setitem(sys.modules, "torch", None)  # an import would raise ImportError
    require_gpu(("cpu",))
    require_gpu("auto")
    with pytest.raises(ImportError):
        require_gpu(("cpu", "cuda"))
    assert issubclass(NoGPU, RuntimeUnavailable) and NoGPU.exit_code == 1


# ---- unknown names: exit 2, checked while parsing (before any folder is read) --------------------
@pytest.mark.parametrize("args, words", [
    (["parity", "{missing}", "--runtime", "onnxrt"], "unknown runtime onnxrt"),
    (["bench", "{missing}", "--runtimes", "onnxruntime,onnxrt"], "unknown runtime onnxrt"),
    (["parity", "{missing}", "--reference", "onnxrt"], "unknown runtime onnxrt"),
    (["parity", "{missing}", "--reference", "onnxruntime/int4"], "unknown precision int4"),
    (["parity", "{missing}", "--precision", "int4"], "unknown precision int4"),
    (["bench", "{missing}", "--precision", "int4"], "unknown precision int4"),
    (["export", "{run}", "--precision", "int4", "--out", "{out}"], "unknown precision int4"),
    (["parity", "{missing}", "--device", "tpu"], "unknown device tpu"),
    (["bench", "{missing}", "--device", "tpu"], "unknown device tpu"),
    (["export", "{run}", "--device", "tpu", "--out", "{out}"], "unknown device tpu"),
    (["eval", "{run}", "--device", "tpu"], "tpu"),
    (["train", "--data", "{data}", *TINY, "--device", "tpu", "--out", "{out}"], "tpu"),
    (["lr-find", "--data", "{data}", *TINY, "--device", "tpu"], "tpu"),
    (["export", "{run}", "--format", "coreml2", "--out", "{out}"], "unknown format coreml2"),
], ids=lambda a: " ".join(a[:1] + a[-2:]) if isinstance(a, list) else None)
def test_an_unknown_name_is_bad_usage(places, args, words):
    line = one_error_line(run_case(places, args), 2)
    assert words in line, line
    assert not places["{out}"].exists()


def test_parity_and_bench_check_runtime_names_through_check_names(monkeypatch, places):
    """One call path: the CLI asks tlexport.runtimes.check_names, so a name it accepts passes
    and one it refuses is refused, in both commands."""
    import tlexport.runtimes as rt
    from tlexport.errors import UsageError

    seen = []

    def check(names):
        seen.append(tuple(names))
        raise UsageError("refused by check_names")

    monkeypatch.setattr(rt, "check_names", check)
    for command in ("parity", "bench"):
        line = one_error_line(run_case(places, [command, "{export}", "--runtime", "onnxruntime"]), 2)
        assert "refused by check_names" in line
    assert seen == [("onnxruntime",), ("onnxruntime",)]


# ---- numbers: exit 2 for out of range or not a number, one message form ---------------------------
BEFORE = {"parity": ["{export}"], "bench": ["{export}"], "predict": ["{export}", "{data}"],
          "export": ["{run}", "--out", "{out}"]}


@pytest.mark.parametrize("command, option, value", [
    ("parity", "--random", "0"), ("parity", "--random", "1.5"), ("parity", "--atol", "-1"),
    ("parity", "--atol", "nan"), ("parity", "--rtol", "inf"), ("parity", "--max-images", "0"),
    ("parity", "--batch-size", "0"), ("parity", "--batch-size", "65537"), ("parity", "--batch-size", "x"),
    ("bench", "--batch-sizes", "0"), ("bench", "--batch-sizes", "1,-4"), ("bench", "--batch-sizes", "1,x"),
    ("bench", "--batch-sizes", "70000"), ("bench", "--iters", "0"), ("bench", "--iters", "2.5"),
    ("bench", "--duration", "0"), ("bench", "--duration", "inf"), ("bench", "--duration", "nan"),
    ("bench", "--threads", "0"), ("bench", "--warmup", "-1"), ("bench", "--warmup", "soon"),
    ("bench", "--concurrency", "0"), ("bench", "--concurrency", "2,x"),
    ("predict", "--top-k", "0"), ("predict", "--top-k", "x"), ("predict", "--batch-size", "0"),
    ("predict", "--batch-size", "65537"),
    ("export", "--opset", "5"), ("export", "--opset", "x"), ("export", "--calib-size", "0"),
    ("export", "--calib-size", "x"), ("export", "--batch", "0"), ("export", "--batch", "1.5"),
])
def test_a_bad_number_is_bad_usage(places, command, option, value):
    line = one_error_line(run_case(places, [command, *BEFORE[command], option, value]), 2)
    assert option.rstrip("s") in line, line  # bench names --batch-sizes by its first spelling, --batch-size
    assert not places["{out}"].exists()


def test_export_batch_above_the_metadata_ceiling_is_bad_usage(tmp_path, fake_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    (run / "run.json").write_text("{}")  # today's export stops here (exit 1) instead of allocating the batch
    one_error_line(invoke("export", run, "--batch", "65537", "--out", tmp_path / "out"), 2)


def test_library_checks_stay_as_a_second_line(fake_run, tmp_path):
    """The library's own checks (for Python callers) still refuse what the CLI refuses."""
    from tlexport.benchmark import bench
    from tlexport.errors import MissingInput, NotAnExport, UsageError

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInput):
        bench(tmp_path / "missing")
    with pytest.raises(NotAnExport):
        bench(tmp_path / "empty")
    (tmp_path / "empty" / "model.onnx").write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown runtime"):
        bench(tmp_path / "empty", runtimes=["onnxrt"])


# ---- options that exclude each other: exit 2 -----------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["parity", "{empty}", "--data", "{data}", "--random", "2"], "either --data or --random"),
    (["bench", "{empty}", "--iters", "3", "--duration", "1"], "either --iters or --duration"),
])
def test_exclusive_options_are_bad_usage_before_the_folder_is_read(places, args, words):
    assert words in one_error_line(run_case(places, args), 2)


# ---- report files: checked before the work, - is stdout ------------------------------------------
@pytest.mark.parametrize("command", ["parity", "bench"])
@pytest.mark.parametrize("option, where, name, words", [
    ("--json", "{empty}", None, "is a folder"),
    ("--json", "{missing}", "r.json", "does not exist"),
    ("--markdown", "{missing}", "r.md", "does not exist"),
    ("--json", "{export}", "manifest.json", "would replace a file tlexport reads"),
    ("--markdown", "{export}", "model.onnx", "would replace a file tlexport reads"),
    ("--json", "{run}", "run.json", "would replace a file tlexport reads"),
])
def test_a_report_that_cannot_be_written_is_refused_before_the_work(places, command, option, where, name, words):
    target = places[where] / name if name else places[where]
    before = sorted(p.name for p in places["{export}"].iterdir())
    line = one_error_line(run_case(places, [command, "{export}", option, target]), 2)
    assert words in line and option in line, line
    assert sorted(p.name for p in places["{export}"].iterdir()) == before


@pytest.mark.parametrize("args", [
    ["parity", "{export}", "--json", "-", "--markdown", "-"],
    ["parity", "{export}", "--json", "{out}", "--markdown", "{out}"],
    ["bench", "{export}", "--json", "{out}", "--plot", "{out}"],
    ["bench", "{export}", "--plot", "-"],
])
def test_two_reports_into_one_place_or_a_picture_on_stdout_is_refused(places, args):
    places["{out}"] = str(places["{out}"]) + ".txt"
    line = one_error_line(run_case(places, args), 2)
    assert "different files" in line or "cannot go to stdout" in line, line


# ---- JSON output: one rendering, strict JSON, the same on stdout and in a file -------------------
def strict_json(text: str):
    """Parse as any strict JSON reader would: NaN / Infinity literals are refused."""
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_text_is_strict_and_shared_by_stdout_and_files(tmp_path, capsys):
    import numpy as np

    from tlexport.cli.common import emit_json, write_json
    from tlexport.render import json_text, write_json_report

    obj = {"nan": math.nan, "inf": math.inf, "minus_inf": -np.float32("inf"), "np": np.float32(0.5),
           "array": np.array([1.0, np.nan]), "path": Path("/x"), "nested": [{"v": float("nan")}]}
    text = json_text(obj)
    assert strict_json(text) == {"nan": None, "inf": None, "minus_inf": None, "np": 0.5, "array": [1.0, None],
                                 "path": "/x", "nested": [{"v": None}]}
    emit_json(obj)
    write_json("-", obj)
    assert capsys.readouterr().out == text + "\n" + text + "\n"
    assert write_json_report(tmp_path / "r.json", obj).read_text() == text + "\n"


@pytest.fixture(scope="module")
def real_export(fake_onnx_export):
    return fake_onnx_export  # shared with test_bench and test_int8 (conftest.py)


def infinite_logits_copy(export_dir: Path, dest: Path) -> Path:
    """A copy of model.onnx whose classifier bias holds +inf: every logit row is non-finite, so
    the parity report carries NaN and infinities that JSON cannot spell."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    dest.mkdir()
    model = onnx.load(str(export_dir / "model.onnx"))
    (bias,) = [t for t in model.graph.initializer if t.name.endswith("fc.bias")]
    values = numpy_helper.to_array(bias).copy()
    values[0] = np.inf
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(dest / "model.onnx"))
    return dest


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # parity subtracting inf from inf
def test_parity_json_on_stdout_and_in_a_file_is_the_same_strict_json(real_export, fake_run, tmp_path):
    bad = infinite_logits_copy(real_export, tmp_path / "bad")
    report = tmp_path / "parity.json"
    report.write_text("an older report: replaced")
    common = ["parity", bad, "--run-dir", fake_run, "--runtime", "onnxruntime", "--random", "2", "--quiet"]
    to_file = invoke(*common, "--json", report)
    to_stdout = invoke(*common, "--json", "-")
    assert to_file.exit_code == to_stdout.exit_code == 1, to_stdout.output  # the gate fails: inf logits
    printed = strict_json(to_stdout.stdout)  # stdout holds the JSON alone (FAIL went to stderr)
    written = strict_json(report.read_text())
    assert "FAIL" in to_stdout.stderr
    row = next(r for r in printed["results"] if r["runtime"] == "onnxruntime")
    assert row["finite"] is False and row["max_abs"] is None  # inf, written as null
    drop = {"environment", "seconds"}
    same = lambda d: {k: v for k, v in d.items() if k not in drop}  # noqa: E731
    assert [same(r) for r in printed["results"]] == [same(r) for r in written["results"]]


def test_bench_json_on_stdout_leaves_the_table_to_stderr(real_export, fake_run):
    r = invoke("bench", real_export, "--run-dir", fake_run, "--runtime", "onnxruntime", "--iters", "2",
               "--warmup", "1", "--json", "-")
    assert r.exit_code == 0, r.output
    report = strict_json(r.stdout)
    assert {c["runtime"] for c in report["results"]} == {"torch-eager", "onnxruntime"}
    assert "tlexport bench" in r.stderr  # the table's title


def test_json_flags_print_strict_json(real_export, tiny_data):
    archs = invoke("archs", "--json")
    assert archs.exit_code == 0 and any(row["arch"] == "resnet18" for row in strict_json(archs.stdout))
    predict = invoke("predict", real_export, tiny_data / "val" / "circle", "--json", "--top-k", "2")
    assert predict.exit_code == 0, predict.output
    rows = strict_json(predict.stdout)
    assert rows and all(len(row["top"]) == 2 for row in rows)
