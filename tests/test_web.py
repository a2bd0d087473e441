"""`tlexport export --format web` in a real browser: Debian's Chromium, driven by playwright-core
(tests/browser/), loads the exported folder from a static server on 127.0.0.1, is handed image
files through the page's own file input (and drop zone, and a fake camera), and the predictions it
shows are compared with `tlexport predict` on the same files. The browser as a runtime: `tlexport
parity` and `tlexport bench` with `--runtimes browser`. One browser for the module; one trained run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from browser.pagedriver import HERE, Driver, StaticServer, missing
from tlexport.cli import cli

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"browser tests: {REASON}")
XSS = "<img src=x onerror=alert(1)>"
PNG_TOL = 1e-4  # lossless files decode to the same pixels: only the kernels' float rounding differs
JPEG_TOL = 1e-3  # the browser's JPEG decoder may round a few pixels differently from Pillow's


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module", autouse=True)
def ort_web():
    """onnxruntime-web from this repository's npm project (tests/browser/node_modules)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEXPORT_ORT_WEB", str(HERE))
        mp.delenv("TLEXPORT_BROWSER_BACKEND", raising=False)
        yield


@pytest.fixture(scope="module")
def browser():
    # WebGPU allowed: here that is Dawn's software adapter, which the page uses only when asked.
    driver = Driver(extra_args=["--enable-unsafe-webgpu"])
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("web") / "run"
    r = invoke("train", "--data", tiny_data, "--arch", "resnet18", "--weights", "none", "--image-size", 32,
               "--epochs", 2, "--batch-size", 8, "--workers", 0, "--lr", 0.01, "--out", run, "--quiet")
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    out = trained.parent / "export"
    r = invoke("export", trained, "--format", "web,onnx", "--precision", "fp32,int8", "--calib-size", 32,
               "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def images(tiny_data, tmp_path_factory) -> dict[str, list[Path]]:
    """The val images (PNG), their JPEG copies, and harder files: not square, transparent, grey,
    palette, EXIF-rotated."""
    from PIL import Image

    from tlexport.data.synth import draw_shape

    root = tmp_path_factory.mktemp("images")
    val = sorted((tiny_data / "val").rglob("*.png"))
    jpegs = []
    for p in val:
        jpegs.append(root / f"{p.stem}.jpg")
        Image.open(p).convert("RGB").save(jpegs[-1], quality=90)
    import random

    rng = random.Random(1)
    wide = draw_shape("square", 80, rng).crop((0, 10, 80, 60))
    wide.save(root / "wide.png")
    shape = np.asarray(draw_shape("circle", 56, rng).convert("RGBA")).copy()
    shape[:, :12, 3] = 0  # a transparent band: composited on white, as Pillow does
    Image.fromarray(shape, "RGBA").save(root / "alpha.png")
    draw_shape("triangle", 40, rng).convert("L").save(root / "grey.png")
    draw_shape("circle", 50, rng).quantize(64).save(root / "palette.png")
    rotated = draw_shape("triangle", 72, rng).crop((0, 0, 72, 45))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    rotated.save(root / "rotated.jpg", quality=92, exif=exif)
    lossless = [root / n for n in ("wide.png", "alpha.png", "grey.png", "palette.png")]
    return {"val": val, "jpeg": jpegs + [root / "rotated.jpg"], "lossless": lossless}


def predict(model: Path, files) -> dict[str, dict]:
    r = invoke("predict", model, *files, "--top-k", 3, "--json")
    assert r.exit_code == 0, r.output
    return {Path(x["image"]).name: {t["label"]: t["prob"] for t in x["top"]} for x in json.loads(r.stdout)}


def compare(shown: list[dict], expected: dict[str, dict]) -> tuple[int, float]:
    """(images whose top-1 agrees, largest probability difference) of the page against predict."""
    agree, worst = 0, 0.0
    assert sorted(c["name"] for c in shown) == sorted(expected), (shown, expected)
    for card in shown:
        assert card["state"] == "done", card
        want = expected[card["name"]]
        agree += card["top"][0]["label"] == max(want, key=want.get)
        assert len(card["top"]) == 3
        for row in card["top"]:
            worst = max(worst, abs(row["probability"] - want[row["label"]]))
    return agree, worst


def clean(state: dict) -> None:
    """A page that ran with no script error, no CSP violation, no dialog."""
    assert state["violations"] == [] and state["dialogs"] == [], state
    assert state["errors"] == [], state


def test_the_page_agrees_with_predict_on_the_val_images(browser, exported, images, trained):
    folder = exported / "model.web"
    assert sorted(p.name for p in (folder / "ort").iterdir()) == [
        "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm", "ort.min.mjs"]
    server = StaticServer(folder)  # what `python -m http.server` does: no isolation headers
    try:
        state = browser.call("open", url=server.url)
        assert state["state"] == "ready", state
        assert state["backend"] == "wasm" and "wasm · SIMD · 1 thread (not cross-origin isolated)" in state["backendText"]
        shown = browser.call("files", paths=[str(p) for p in images["val"] + images["lossless"]])
    finally:
        server.close()
    clean(shown)
    files = images["val"] + images["lossless"]
    agree, worst = compare(shown["results"], predict(folder / "model.onnx", files))
    print(f"lossless: top-1 {agree}/{len(files)}, largest probability difference {worst:.2e}")
    assert agree == len(files) and worst <= PNG_TOL, (agree, worst)
    for card in shown["results"]:
        assert card["ms"] > 0 and card["latency"].startswith("inference ")
    # a trained model, not a uniform one: the check above compares real probabilities
    assert max(c["top"][0]["probability"] for c in shown["results"]) > 0.5


def test_jpeg_and_exif_orientation_agree_within_the_decoder_tolerance(browser, exported, images):
    folder = exported / "model.web"
    server = StaticServer(folder)
    try:
        browser.call("open", url=server.url)
        shown = browser.call("files", paths=[str(p) for p in images["jpeg"]])
    finally:
        server.close()
    clean(shown)
    agree, worst = compare(shown["results"], predict(folder / "model.onnx", images["jpeg"]))
    print(f"JPEG: top-1 {agree}/{len(images['jpeg'])}, largest probability difference {worst:.2e}")
    assert agree == len(images["jpeg"]) and worst <= JPEG_TOL, (agree, worst)


def test_cross_origin_isolation_gives_wasm_threads_under_the_strict_csp(browser, exported, images):
    folder = exported / "model.web"
    html = (folder / "index.html").read_text()
    assert "content=\"default-src 'self'; script-src 'self' 'wasm-unsafe-eval'\"" in html
    server = StaticServer(folder, isolate=True)
    try:
        state = browser.call("open", url=server.url)
        shown = browser.call("files", paths=[str(p) for p in images["val"][:4]])
    finally:
        server.close()
    threads = min(4, state["cores"])
    assert state["isolated"] is True
    assert f"wasm · SIMD · {threads} thread{'s' if threads > 1 else ''}" in state["backendText"], state
    assert "not cross-origin isolated" not in state["backendText"]
    clean(shown)
    agree, worst = compare(shown["results"], predict(folder / "model.onnx", images["val"][:4]))
    assert agree == 4 and worst <= PNG_TOL


def test_webgpu_is_used_when_asked_and_agrees(browser, exported, images):
    """Auto picks wasm over a software GPU adapter; ?backend=webgpu runs onnxruntime-web's WebGPU
    backend (here on Dawn's SwiftShader adapter, on the CPU)."""
    folder = exported / "model.web"
    server = StaticServer(folder)
    try:
        state = browser.call("open", url=server.url + "?backend=webgpu")
        assert state["backend"] == "webgpu" and state["backendText"].endswith("WebGPU (swiftshader, software adapter)"), state
        shown = browser.call("files", paths=[str(p) for p in images["val"][:3]])
    finally:
        server.close()
    clean(shown)
    agree, worst = compare(shown["results"], predict(folder / "model.onnx", images["val"][:3]))
    print(f"WebGPU: top-1 {agree}/3, largest probability difference {worst:.2e}")
    assert agree == 3 and worst <= JPEG_TOL, worst


def test_dropped_camera_and_broken_images(browser, exported, images, tmp_path):
    folder = exported / "model.web"
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    server = StaticServer(folder)
    try:
        browser.call("open", url=server.url + "?k=3")
        dropped = browser.call("drop", path=str(images["val"][5]))
        captured = browser.call("capture")
        failed = browser.call("files", paths=[str(broken)])
    finally:
        server.close()
    clean(failed)
    bad = failed["results"][-1]
    assert bad["state"] == "error" and bad["note"].startswith("could not classify: ") and bad["top"] == [], bad
    agree, worst = compare(dropped["results"], predict(folder / "model.onnx", [images["val"][5]]))
    assert agree == 1 and worst <= PNG_TOL
    camera = captured["results"][-1]
    assert camera["name"].startswith("camera ") and camera["state"] == "done", camera
    assert abs(sum(r["probability"] for r in camera["top"]) - 1.0) < 1e-5  # k=3 of 3 classes: all of them


def test_a_class_name_with_html_is_shown_as_text(browser, exported, tiny_data, tmp_path):
    """labels.json holds the run's class names as they are (test_web_format checks that); a name
    that is HTML is shown as text, and nothing in it runs."""
    folder = tmp_path / "model.web"
    shutil.copytree(exported / "model.web", folder)
    (folder / "labels.json").write_text(json.dumps([XSS, "square", "triangle"]))
    named = tmp_path / "<b onmouseover=alert(2)>bold.png"
    shutil.copyfile(next((tiny_data / "val").rglob("*.png")), named)
    server = StaticServer(folder)
    try:
        browser.call("open", url=server.url)
        shown = browser.call("files", paths=[str(named)])
    finally:
        server.close()
    clean(shown)  # no alert() ran
    (card,) = shown["results"]
    assert card["name"] == "<b onmouseover=alert(2)>bold.png"
    row = next(r for r in card["top"] if r["index"] == 0)
    assert row["text"] == XSS and row["label"] == XSS and row["children"] == 0
    assert row["html"] == "&lt;img src=x onerror=alert(1)&gt;"


def _in_graph_model(path: Path, classes: int = 3) -> None:
    """A stand-in with the in-graph-preprocessing contract: `image` uint8 [H, W, 3] in, `logits`
    and `probabilities` [1, K] out (here a linear map of the mean colour)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((3, classes)).astype(np.float32) / 20
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
             helper.make_node("Unsqueeze", ["mean", "zero"], ["row"]),
             helper.make_node("MatMul", ["row", "weight"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    init = [numpy_helper.from_array(np.array([0, 1], np.int64), "axes"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(weight, "weight")]
    graph = helper.make_graph(nodes, "in-graph", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["H", "W", 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, classes])
                               for n in ("logits", "probabilities")], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def test_an_in_graph_preprocessing_model_gets_the_decoded_pixels(browser, exported, images, tmp_path):
    """The page's other model kind: it hands a uint8-input model the decoded RGB pixels and shows
    its `probabilities` (the same numbers onnxruntime gives for Pillow's decoding of the file)."""
    import onnxruntime as ort

    from tlexport.data.images import load_rgb

    folder = tmp_path / "model.web"
    shutil.copytree(exported / "model.web", folder, ignore=shutil.ignore_patterns("model.onnx"))
    _in_graph_model(folder / "model.uint8.onnx")
    (folder / "config.json").write_text(json.dumps({"model": "model.uint8.onnx", "labels": "labels.json"}))
    files = [images["lossless"][0], images["val"][0]]  # not square, and square
    server = StaticServer(folder)
    try:
        browser.call("open", url=server.url)
        shown = browser.call("files", paths=[str(p) for p in files])
    finally:
        server.close()
    clean(shown)
    session = ort.InferenceSession(str(folder / "model.uint8.onnx"), providers=["CPUExecutionProvider"])
    labels = json.loads((folder / "labels.json").read_text())
    for card, path in zip(shown["results"], files):
        want = session.run(["probabilities"], {"image": np.asarray(load_rgb(path))})[0][0]
        assert card["state"] == "done" and len(card["top"]) == 3, card
        for row in card["top"]:
            assert row["label"] == labels[row["index"]] and abs(row["probability"] - want[row["index"]]) < 1e-6


def test_a_fixed_batch_graph_gets_the_image_repeated(browser, exported, images, tmp_path):
    """A graph exported with --batch N takes N images at once: the page repeats its one image."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tlexport.data.preprocess import Preprocess

    props = {p.key: p.value for p in onnx.load(exported / "model.onnx", load_external_data=False).metadata_props}
    pre = Preprocess.from_dict(json.loads(props["tlexport.preprocess"]))
    weight = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
             helper.make_node("MatMul", ["mean", "weight"], ["logits"])]
    init = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"), numpy_helper.from_array(weight, "weight")]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, pre.crop, pre.crop])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    model.metadata_props.add(key="tlexport.preprocess", value=props["tlexport.preprocess"])
    folder = tmp_path / "model.web"
    shutil.copytree(exported / "model.web", folder)
    onnx.save(model, folder / "model.onnx")
    server = StaticServer(folder)
    try:
        browser.call("open", url=server.url)
        shown = browser.call("files", paths=[str(images["lossless"][0])])
    finally:
        server.close()
    clean(shown)
    x = pre.to_array(pre.load(images["lossless"][0]))[None].repeat(2, axis=0)
    logits = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0][0]
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    (card,) = shown["results"]
    assert card["state"] == "done", card
    assert max(abs(r["probability"] - want[r["index"]]) for r in card["top"]) < 1e-5


def test_parity_runs_the_browser_and_passes_its_gates(exported, tmp_path):
    r = invoke("parity", exported, "--runtimes", "browser", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p.json").read_text())
    rows = {Path(x["artifact"]).name: x for x in report["results"] if x["runtime"] == "browser"}
    assert sorted(rows) == ["model.int8.onnx", "model.int8.web", "model.onnx", "model.web"], report["results"]
    assert all(row["passed"] for row in rows.values()), rows
    for name in ("model.onnx", "model.web"):  # fp32: the logits gates, every image
        assert rows[name]["max_abs"] < 1e-4 and rows[name]["top1_agreement"] == 100.0, rows[name]
    assert report["images"] == 12


def test_bench_reports_in_page_latency_beside_onnxruntime(exported, tmp_path):
    r = invoke("bench", exported, "--runtimes", "browser,onnxruntime", "--precision", "fp32", "--iters", 5, "--warmup", 1,
               "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md")
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "b.json").read_text())["results"]
    by = {(x["runtime"], x["artifact"]): x for x in results}
    assert {("torch-eager", None), ("onnxruntime", "model.onnx"), ("browser", "model.onnx"),
            ("browser", "model.web")} <= set(by), list(by)
    for key in (("browser", "model.onnx"), ("browser", "model.web")):
        row = by[key]
        assert row["error"] is None and row["iters"] == 5, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] and row["first_call_ms"] > 0, row
        assert row["timer"].startswith("performance.now() around session.run in the page (onnxruntime-web 1.30.0, wasm")
        # the page's own interval lies inside the round trip that Python timed around it
        assert row["wall_p50_ms"] >= row["p50_ms"], row
    assert by[("onnxruntime", "model.onnx")]["timer"] is None
    assert "Timed by the runtime where it ran" in (tmp_path / "b.md").read_text()


def test_the_runtime_loads_once_runs_many_and_closes_its_browser(exported):
    from tlexport.formats.web.runtime import BrowserRuntime

    rt = BrowserRuntime(exported / "model.web").load()
    page = rt.page
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    first, again, alone = rt.run(x), rt.run(x), rt.run(x[:1])
    assert first.shape == (3, 3) and np.array_equal(first, again)
    assert np.allclose(alone, first[:1], atol=1e-5)
    assert rt.reported_ms >= 0 and "wasm" in rt.timer  # a clamped browser clock may read 0 for a tiny model
    proc = page._proc
    rt.close()
    assert proc.poll() is not None and page._profile is None and not hasattr(rt, "page")


def test_a_broken_model_fails_to_load_with_one_line(exported, tmp_path):
    from tlexport.errors import RuntimeUnavailable
    from tlexport.formats.web.runtime import BrowserRuntime

    folder = tmp_path / "model.web"
    shutil.copytree(exported / "model.web", folder)
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:5000])
    with pytest.raises(RuntimeUnavailable, match="the page could not start: ") as e:
        BrowserRuntime(folder).load()
    assert "\n" not in str(e.value)
