"""The web format without a browser: the folder it writes, its refusals, the versions it pins, the
page's JavaScript preprocessing checked bit for bit against tlexport's Python preprocessing (in
node), its metadata reader, its hygiene (no inline script, no eval, no HTML from data), the browser
runtime's server and its skip reasons, and bench's use of a runtime's own timings."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tlexport.browser.ortweb import ENV, FILES, ORT_WEB_VERSION
from tlexport.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "tlexport" / "formats" / "web" / "page"
NPM = ROOT / "tests" / "browser"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def fake_dist(tmp_path, monkeypatch) -> Path:
    """An onnxruntime-web install of the pinned version whose files are stand-ins (no browser
    runs them in this module)."""
    dist = tmp_path / "npm" / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    (dist.parent / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": ORT_WEB_VERSION}))
    for name in FILES:
        (dist / name).write_text(f"// {name}\n")
    monkeypatch.setenv(ENV, str(tmp_path / "npm"))
    return dist


def test_the_export_writes_a_static_folder_with_the_model_labels_and_readme(tiny_data, fake_dist, tmp_path):
    from conftest import write_fake_run
    from tlexport.formats.metadata import read_metadata
    from tlexport.tables.artifacts import artifact_sha256

    classes = ["<img src=x onerror=alert(1)>", "carré", "triangle"]  # labels.json keeps names as they are
    run = write_fake_run(tmp_path / "run", tiny_data, classes)
    out = tmp_path / "export"
    r = invoke("export", run, "--format", "web", "--out", out, "--no-verify")
    assert r.exit_code == 0, r.output
    folder = out / "model.web"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted([
        "index.html", "app.js", "classify.js", "preprocess.js", "onnxmeta.js", "style.css", "icon.svg",
        "model.onnx", "labels.json", "config.json", "README.md", *(f"ort/{f}" for f in FILES)])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.web"]  # no stray model.onnx
    assert json.loads((folder / "labels.json").read_text(encoding="utf-8")) == classes
    config = json.loads((folder / "config.json").read_text())
    assert (config["model"], config["labels"], config["onnxruntime_web"]) == ("model.onnx", "labels.json", ORT_WEB_VERSION)
    assert read_metadata(folder)["classes"] == classes
    readme = (folder / "README.md").read_text()
    for words in ("python -m http.server", "Cross-Origin-Opener-Policy: same-origin",
                  "Cross-Origin-Embedder-Policy: require-corp", "?backend=wasm", "resnet18"):
        assert words in readme
    assert "$" not in readme  # every placeholder was filled
    (art,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert (art["file"], art["format"], art["precision"]) == ("model.web", "web", "fp32")
    assert art["sha256"] == artifact_sha256(folder) and art["inputs"][0]["dtype"] == "float32"


def test_a_missing_onnxruntime_web_is_named_in_one_line_and_nothing_is_written(fake_run, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "nothing-here"))
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "web", "--out", out)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and f"npm install --ignore-scripts onnxruntime-web@{ORT_WEB_VERSION}" in line, line
    assert ENV in line and not out.exists()


def test_another_onnxruntime_web_version_is_refused(fake_run, fake_dist, tmp_path):
    (fake_dist.parent / "package.json").write_text(json.dumps({"version": "1.0.0"}))
    r = invoke("export", fake_run, "--format", "web", "--out", tmp_path / "x", "--no-verify")
    assert r.exit_code == 2, r.output
    assert f"holds onnxruntime-web 1.0.0, tlexport needs {ORT_WEB_VERSION}" in r.output


def test_the_npm_project_pins_the_versions_tlexport_is_tested_with():
    package = json.loads((NPM / "package.json").read_text())
    lock = json.loads((NPM / "package-lock.json").read_text())
    assert package["dependencies"]["onnxruntime-web"] == ORT_WEB_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", package["dependencies"]["playwright-core"])  # exact: no ^ or ~
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == ORT_WEB_VERSION
    assert "node_modules/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_page_runs_no_inline_script_no_eval_and_inserts_no_html():
    html = (PAGE / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="app.js">']
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    assert "content=\"default-src 'self'; script-src 'self' 'wasm-unsafe-eval'\"" in html
    for js in PAGE.glob("*.js"):
        text = js.read_text()
        for bad in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                    "setTimeout('", 'setTimeout("'):
            assert bad not in text, (js.name, bad)


# ---- the page's preprocessing, bit for bit -------------------------------------------------------
CHECK = """
import { readFileSync } from 'node:fs';
const [dir, mod, pillow] = process.argv.slice(2);
const { toTensor, resizeRgb, rgbFromRgba } = await import(mod);
const spec = JSON.parse(readFileSync(`${dir}/cases.json`));
const read = (name, T) => { const b = readFileSync(`${dir}/${name}`); return new T(b.buffer, b.byteOffset, b.length / T.BYTES_PER_ELEMENT); };
const bad = [];
for (const c of spec.tensors) {
  const got = toTensor(read(c.name + '.rgb', Uint8Array), c.w, c.h, c.pre, Number(pillow));
  const want = read(c.name + '.f32', Float32Array);
  if (got.length !== want.length || got.some((v, i) => v !== want[i])) bad.push(c.name);
}
for (const c of spec.resizes) {
  const got = resizeRgb(read(c.name + '.rgb', Uint8Array), c.w, c.h, c.ow, c.oh, c.interpolation, Number(pillow));
  const want = read(c.name + '.out', Uint8Array);
  if (got.length !== want.length || got.some((v, i) => v !== want[i])) bad.push(c.name);
}
const got = rgbFromRgba(read('alpha.rgba', Uint8Array));
const want = read('alpha.rgb', Uint8Array);
if (got.some((v, i) => v !== want[i])) bad.push('alpha');
console.log(JSON.stringify({ bad, checked: spec.tensors.length + spec.resizes.length + 1 }));
"""


def _write_cases(folder: Path) -> int:
    """Random images of many shapes with tlexport's preprocessing and Pillow's plain resizes of
    them; returns how many there are."""
    from PIL import Image

    from tlexport.data.images import to_rgb
    from tlexport.data.preprocess import Preprocess

    rng, pick = np.random.default_rng(0), random.Random(0)
    tensors, resizes = [], []
    shapes = [(48, 48), (80, 50), (50, 80), (333, 217), (31, 200), (200, 31), (17, 29), (7, 9), (64, 64)]
    for i, ((w, h), interpolation) in enumerate((s, m) for s in shapes for m in ("bilinear", "bicubic", "nearest")):
        resize, crop = pick.choice([(37, 32), (55, 48), (20, 16), (256, 224), (64, 64)])
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 2:  # smooth content too, where rounding ties are common
            arr = np.clip(np.cumsum(arr.astype(int) % 7 - 3, axis=1) + 128, 0, 255).astype(np.uint8)
        pre = Preprocess(resize=resize, crop=crop, interpolation=interpolation)
        arr.tofile(folder / f"t{i}.rgb")
        pre.to_array(Image.fromarray(arr)).astype(np.float32).tofile(folder / f"t{i}.f32")
        tensors.append({"name": f"t{i}", "w": w, "h": h, "pre": pre.to_dict()})
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    for i in range(150):  # plain resizes, both pass orders (height shrinking more than width, or not)
        w, h = pick.randint(2, 90), pick.randint(2, 90)
        ow = max(1, w - pick.randint(-20, 40))
        oh = max(1, h - 2 * (w - ow) + pick.randint(-3, 3)) if i % 2 else pick.randint(1, 90)
        interpolation = ("bilinear", "bicubic", "nearest")[i % 3]
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr.tofile(folder / f"r{i}.rgb")
        np.asarray(Image.fromarray(arr).resize((ow, oh), filters[interpolation])).tofile(folder / f"r{i}.out")
        resizes.append({"name": f"r{i}", "w": w, "h": h, "ow": ow, "oh": oh, "interpolation": interpolation})
    rgba = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    rgba.tofile(folder / "alpha.rgba")
    np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))).tofile(folder / "alpha.rgb")
    (folder / "cases.json").write_text(json.dumps({"tensors": tensors, "resizes": resizes}))
    return len(tensors) + len(resizes) + 1


@needs_node
def test_the_page_preprocesses_bit_for_bit_as_tlexport_does_in_python(tmp_path):
    import PIL

    n = _write_cases(tmp_path)
    (tmp_path / "check.mjs").write_text(CHECK)
    out = subprocess.run([NODE, str(tmp_path / "check.mjs"), str(tmp_path), (PAGE / "preprocess.js").as_uri(),
                          PIL.__version__.split(".")[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"bad": [], "checked": n}


@needs_node
def test_the_page_reads_the_metadata_onnx_reads(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, producer_name="tlexport-test")
    props = {"tlexport.classes": json.dumps(["chat", "niño", "<b>x</b>"]), "tlexport.arch": "resnet18", "empty": ""}
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[:-3])
    script = ("import { readFileSync } from 'node:fs';\n"
              f"const {{ readMetadata }} = await import({json.dumps((PAGE / 'onnxmeta.js').as_uri())});\n"
              "const out = {};\n"
              "for (const f of process.argv.slice(2)) {\n"
              "  try { out[f] = readMetadata(new Uint8Array(readFileSync(f))); } catch (e) { out[f] = String(e.message); }\n"
              "}\n"
              "console.log(JSON.stringify(out));\n")
    (tmp_path / "read.mjs").write_text(script)
    run = subprocess.run([NODE, str(tmp_path / "read.mjs"), str(tmp_path / "m.onnx"), str(tmp_path / "cut.onnx")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got[str(tmp_path / "m.onnx")] == {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert got[str(tmp_path / "cut.onnx")].startswith("not an ONNX file")


# ---- the browser runtime without a browser -------------------------------------------------------
def test_the_browser_runtime_is_skipped_with_its_reason(tmp_path, monkeypatch):
    from tlexport import runtimes

    (tmp_path / "model.onnx").write_bytes(b"not loaded: discovery only")
    monkeypatch.setenv("TLEXPORT_CHROMIUM", str(tmp_path / "no-browser"))
    found, skipped = runtimes.discover(tmp_path, names=["browser"])
    assert found == [] and [s.reason for s in skipped] == [f"TLEXPORT_CHROMIUM={tmp_path / 'no-browser'} is not an executable file"]
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    monkeypatch.setenv("TLEXPORT_CHROMIUM", str(browser))
    monkeypatch.setenv(ENV, str(tmp_path / "no-npm"))
    found, skipped = runtimes.discover(tmp_path, names=["browser"])
    assert found == [] and "npm install --ignore-scripts onnxruntime-web@" in skipped[0].reason


def test_the_page_server_serves_its_routes_only_and_carries_tensors_both_ways(tmp_path):
    from tlexport.browser.server import Job, PageServer

    (tmp_path / "a.mjs").write_text("export const a = 1;\n")
    (tmp_path / "secret.txt").write_text("not routed")
    server = PageServer({"/a.mjs": tmp_path / "a.mjs"})
    try:
        with urllib.request.urlopen(server.url + "/a.mjs") as r:
            assert r.headers["Content-Type"] == "text/javascript" and r.read() == b"export const a = 1;\n"
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        for path in ("/secret.txt", "/../secret.txt", "/a.mjs/../secret.txt"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(server.url + path)
        x = np.arange(6, dtype="<f4").reshape(1, 6)
        server.channel.jobs.put(Job(x.shape, x.tobytes()))
        with urllib.request.urlopen(server.url + "/__channel/job") as r:
            assert r.headers["X-Shape"] == "1,6" and np.array_equal(np.frombuffer(r.read(), "<f4"), x.ravel())
        post = urllib.request.Request(server.url + "/__channel/result", data=(x * 2).tobytes(), method="POST",
                                      headers={"X-Shape": "1,6", "X-Ms": "1.5"})
        with urllib.request.urlopen(post) as r:
            assert r.status == 204
        shape, body, ms = server.channel.results.get(timeout=5)
        assert shape == (1, 6) and ms == 1.5 and np.array_equal(np.frombuffer(body, "<f4"), x.ravel() * 2)
    finally:
        server.close()


def test_bench_times_a_runtime_by_its_own_clock_when_it_has_one():
    """A runtime that reports `reported_ms` and names its `timer` (the browser runtime) is
    measured by those numbers; the round trip is kept beside them."""
    from tlexport.benchmark import time_runtime

    class SelfTimed:
        name, precision, device, metadata = "self-timed", "fp32", "cpu", {"preprocess": {"crop": 8}}
        timer = "a clock inside the runtime"

        def __init__(self):
            self.calls = 0

        def run(self, batch):
            self.calls += 1
            self.reported_ms = 100.0 if self.calls == 1 else float(self.calls)
            return np.zeros((len(batch), 3), np.float32)

        def synchronize(self):
            pass

    res = time_runtime(SelfTimed(), 1, warmup=2, iters=5)
    assert res.first_call_ms == 100.0  # the first call, as the runtime timed it
    assert (res.min_ms, res.p50_ms, res.iters) == (3.0, 5.0, 5)  # calls 3..7 as reported
    assert res.timer == "a clock inside the runtime" and res.wall_p50_ms >= 0
