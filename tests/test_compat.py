"""Runtime compatibility: the release table restates the compatibility benchmark's newest result,
the manifest's minimum versions come from it, `--target` chooses and checks against it (exit 2 for
an unknown release, 1 for a file the release cannot load), `--dynamic-size` and OpenCV's DNN."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_export import full_export

from tlexport.cli import cli
from tlexport.formats.onnx import compat

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("compat_benchmark", ROOT / "benchmarks" / "compat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads((ROOT / compat.RESULT).read_text())


@pytest.fixture(scope="module")
def exported(fake_run, tmp_path_factory):
    return full_export(fake_run, tmp_path_factory)


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def test_the_table_is_the_newest_benchmark_result(result):
    newest = sorted((ROOT / "benchmarks" / "results").glob("compat-*.json"))[-1]
    assert compat.RESULT == f"benchmarks/results/{newest.name}"
    bench = _benchmark()
    facts = {f["file"]: f for f in result["files"]}
    rows = [bench.release(r, facts) for r in result["rows"]]
    want = {(r["runtime"], r["version"]): r for r in rows if r and r["runtime"] != "litert"}
    got = {(r.runtime, r.version): r for r in compat.RELEASES}
    assert set(got) == set(want)
    for key, r in want.items():
        g = got[key]
        assert (g.opset, g.ir, sorted(g.lacks), list(g.ort_formats), g.tflite) == \
               (r["opset"], r["ir"], r["lacks"], r["ort_formats"], r["tflite"]), key
    assert set(compat.MEASURED) == {f for x in result["files"] for f in x.get("features", [])}
    assert [(_v(r.version)) for r in compat.RELEASES if r.runtime == "onnxruntime"] == \
           sorted(_v(r.version) for r in compat.RELEASES if r.runtime == "onnxruntime")


def test_the_table_says_loads_exactly_where_the_benchmark_agreed(result):
    facts = {f["file"]: f for f in result["files"]}
    table = {(r.runtime, r.version): r for r in compat.RELEASES}
    checked = 0
    for row in result["rows"]:
        release = table.get((row["runtime"], row["version"].split(" ")[0]))
        if release is None:
            continue
        for name, verdict in row["files"].items():
            assert compat.loads(release, facts[name]) == (verdict["status"] == "agrees"), (row["runtime"], row["version"], name)
            checked += 1
    assert checked > 100


def test_default_files_load_in_onnxruntime_117_and_its_node_and_web_builds(result):
    facts = {f["file"]: f for f in result["files"]}
    for name in ("model.onnx", "model.int8.onnx"):
        assert facts[name]["opset"] <= 20 and facts[name]["ir"] <= 9  # onnxruntime 1.17.3's newest
        for row in result["rows"]:
            if row["runtime"] in ("onnxruntime", "onnxruntime-node", "onnxruntime-web") and not row["error"] \
                    and _v(row["version"].split(" ")[0])[:2] >= (1, 17):
                assert row["files"][name]["status"] == "agrees", (row["runtime"], row["version"], name)
    opencv = {r["version"]: r["files"] for r in result["rows"] if r["runtime"] == "opencv"}
    assert opencv["4.10.0"]["model.onnx"]["status"] == "agrees"


def test_the_manifest_records_the_oldest_releases_from_the_table(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    arts = {a["file"]: a for a in manifest["artifacts"]}
    for name in ("model.onnx", "model.int8.onnx", "model.uint8.onnx"):
        assert arts[name]["compat"] == json.loads(json.dumps(compat.oldest(exported / name)))
    oldest = arts["model.onnx"]["compat"]["oldest"]
    assert _v(oldest["onnxruntime"])[:2] <= (1, 17) and _v(oldest["onnxruntime-node"])[:2] <= (1, 17)
    assert _v(oldest["onnxruntime-web"])[:2] <= (1, 17) and oldest["opencv"] == "4.10.0"
    assert arts["model.uint8.onnx"]["compat"]["oldest"]["opencv"] is None  # no OpenCV runs it
    assert arts["model.ts"]["compat"] is None
    fp16 = arts["model.fp16.onnx"]["compat"]  # the benchmark ran no fp16 file: no claim is made
    assert fp16["oldest"] == {} and "not measured" in fp16["note"] and compat.FP16 in fp16["facts"]["features"]


# ---- --target ---------------------------------------------------------------------------------------
def _export(fake_run, out, *args):
    return CliRunner().invoke(cli, ["export", str(fake_run), "--out", str(out), "--calib-size", "8", *args])


def _one_line(r, code, *texts):
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:") and "Traceback" not in r.output, r.output
    for t in texts:
        assert t in lines[-1], r.output


def test_target_chooses_the_opset_and_records_how_each_file_was_checked(fake_run, tmp_path):
    import onnxruntime

    here = ".".join(onnxruntime.__version__.split(".")[:2])
    r = _export(fake_run, tmp_path / "e", "--target", "onnxruntime==1.17", "--target", f"onnxruntime=={here}",
                "--target", "onnxruntime-web==1.18")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["opset"] == 18 and manifest["targets"] == ["onnxruntime==1.17", f"onnxruntime=={here}",
                                                               "onnxruntime-web==1.18"]
    (art,) = manifest["artifacts"]
    checks = {c["target"]: c["checked"] for c in art["compat"]["targets"]}
    assert checks["onnxruntime==1.17"].startswith("static") and checks["onnxruntime-web==1.18"].startswith("static")
    assert checks[f"onnxruntime=={here}"].startswith(f"loaded in onnxruntime {onnxruntime.__version__} here")


@pytest.mark.parametrize("target,text", [
    ("onnxruntime==9.1", "not in tlexport's measured table"),
    ("tensorflow==2.14", "unknown runtime"),
    ("onnxruntime", "RUNTIME==VERSION"),
])
def test_an_unknown_target_is_a_usage_error(fake_run, tmp_path, target, text):
    _one_line(_export(fake_run, tmp_path / "e", "--target", target), 2, text)
    assert not (tmp_path / "e").exists()


def test_a_target_that_reads_none_of_the_formats_is_refused(fake_run, tmp_path):
    _one_line(_export(fake_run, tmp_path / "e", "--target", "tflite-runtime==2.14"), 2, "tflite-runtime", ".tflite")


def test_an_opset_newer_than_the_target_reads_is_refused(fake_run, tmp_path):
    _one_line(_export(fake_run, tmp_path / "e", "--opset", "21", "--target", "onnxruntime==1.17"), 2,
              "--opset 21", "up to 20")


def test_a_file_the_target_cannot_run_fails_naming_what_it_lacks(fake_run, tmp_path):
    r = _export(fake_run, tmp_path / "e", "--target", "opencv==4.14", "--bake-preprocess", "--no-verify")
    _one_line(r, 1, "model.uint8.onnx", "opencv 4.14.0 lacks", compat.SHAPE_MATH)
    assert not (tmp_path / "e").exists()  # nothing half-written is left


def test_parse_names_the_known_releases():
    from tlexport.errors import UsageError
    from tlexport.formats.onnx.targets import parse

    assert parse("onnxruntime==1.17").release.version == "1.17.3"
    assert parse("opencv-python-headless==4.10.0").release.version == "4.10.0"
    with pytest.raises(UsageError, match="1.17.3"):
        parse("onnxruntime==1.3")


# ---- --dynamic-size ----------------------------------------------------------------------------------
def test_dynamic_size_is_refused_by_formats_that_cannot_take_it(fake_run, tmp_path):
    r = _export(fake_run, tmp_path / "e", "--format", "onnx,torchscript", "--dynamic-size")
    _one_line(r, 2, "--dynamic-size: torchscript", "onnx")


def test_dynamic_size_frees_height_and_width_verified_at_several_sizes(fake_run, tmp_path):
    import onnxruntime as ort
    import torch

    r = _export(fake_run, tmp_path / "e", "--format", "onnx,pt2", "--dynamic-size")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["dynamic_size"] is True and len(manifest["verification"]["sizes"]) >= 2
    for a in manifest["artifacts"]:
        assert a["inputs"][0]["shape"] == ["batch", 3, "height", "width"], a["file"]
        assert [s["size"] for s in a["verification"]["sizes"]] == manifest["verification"]["sizes"]
        assert all(s["passed"] for s in a["verification"]["sizes"])
    x = np.random.default_rng(0).standard_normal((2, 3, 70, 41)).astype(np.float32)  # a size not verified
    onnx_out = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    pt2 = torch.export.load(str(tmp_path / "e" / "model.pt2")).module()
    with torch.inference_mode():
        assert np.abs(pt2(torch.from_numpy(x)).numpy() - onnx_out).max() < 1e-3


# ---- OpenCV's DNN -------------------------------------------------------------------------------------
def test_opencv_runs_fp32_and_int8_onnx_in_parity(exported, tmp_path):
    pytest.importorskip("cv2")
    r = CliRunner().invoke(cli, ["parity", str(exported), "--runtimes", "opencv", "--precision", "fp32,int8",
                                 "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    rows = {(x["runtime"], x["precision"]): x for x in json.loads((tmp_path / "p.json").read_text())["results"]}
    assert rows[("opencv", "fp32")]["passed"] is True and rows[("opencv", "fp32")]["top1_agreement"] == 100.0
    int8 = rows[("opencv", "int8")]
    assert int8["passed"] is True or "does not read" in (int8.get("skipped_reason") or ""), int8


def test_opencv_5_skips_int8_with_the_layout_it_cannot_read(monkeypatch):
    from tlexport.formats.onnx import runtime

    monkeypatch.setattr(runtime, "_opencv_version", lambda: ("5.0.0", 5))
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: object())
    why = runtime.OpenCVRuntime.unavailable_reason("cpu", "int8")
    assert "OpenCV 5.0.0" in why and "QDQ" in why and "4.10 to 4.14" in why
    assert runtime.OpenCVRuntime.unavailable_reason("cpu", "fp32") is None
