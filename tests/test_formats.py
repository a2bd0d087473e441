"""The format registry: every row consistent (a builder, a reader, runtimes that exist, unique
suffixes, known extras), the precision rules enforced in one place, docs/formats.md generated
from it, onnxruntime's providers as data, the int8 options refused where a format cannot honour
them, and a throwaway folder format (`webdir`: an ONNX model and its metadata in a folder, as an
onnxruntime-web app loads it) written as a package and registered with one registry line, the
way the next real format is added, then exported, verified, listed, predicted, replaced and
removed through the CLI."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.formats import registry
from tlexport.formats.spec import CALIB_METHODS, DEVICES, MODEL, PRECISIONS, REFERENCE_RUNTIME

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]


# ---- the consistency check ---------------------------------------------------------------------
def _extras() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name or name.startswith(f"{e.name}."):
            return None
        raise


def _code_problems(spec) -> list[str]:
    """What the spec's package lacks: a builder, a reader, the runtimes it says it provides."""
    out = []
    build, reader = _module(f"{spec.package}.build"), _module(f"{spec.package}.metadata")
    if not callable(getattr(build, "build", None)):
        out.append(f"{spec.name}: no builder ({spec.package}.build.build)")
    if not callable(getattr(reader, "read", None)):
        out.append(f"{spec.name}: no reader ({spec.package}.metadata.read)")
    runtime = _module(f"{spec.package}.runtime") if spec.provides else None
    kinds = getattr(runtime, "RUNTIMES", ()) if spec.provides else ()
    if tuple(k.name for k in kinds) != spec.provides:
        out.append(f"{spec.name}: provides {spec.provides} but {spec.package}.runtime.RUNTIMES holds "
                   f"{tuple(k.name for k in kinds)}")
    out += [f"{spec.name}: runtime {k.name} cannot say whether it runs here" for k in kinds
            if not callable(getattr(k, "unavailable_reason", None)) or not callable(k)]
    return out


def _row_problems(spec, formats: dict, extras: dict) -> list[str]:
    out = []
    provided = {REFERENCE_RUNTIME} | {n for s in formats.values() for n in s.provides}
    if not spec.runtimes:
        out.append(f"{spec.name}: no runtime runs it")
    out += [f"{spec.name}: runtime {n} ({d}) is provided by no format" for n, d in spec.runtimes if n not in provided]
    out += [f"{spec.name}: unknown device {d}" for _, d in spec.runtimes if d not in DEVICES]
    out += [f"{spec.name}: unknown precision {f.precision}" for f in spec.files if f.precision not in PRECISIONS]
    if not spec.precisions:
        out.append(f"{spec.name}: no model file, so no precision")
    if spec.extra is not None and spec.extra not in extras:
        out.append(f"{spec.name}: extra {spec.extra!r} is not in pyproject.toml's optional-dependencies")
    if spec.needs and spec.extra is None:
        out.append(f"{spec.name}: needs {[r.module for r in spec.needs]} but names no extra")
    out += [f"{spec.name}: the hint for {r.module} does not install .[{spec.extra}]" for r in spec.needs
            if f".[{spec.extra}]" not in r.pip]
    if ("int8" in spec.precisions) != (spec.int8 is not None):
        out.append(f"{spec.name}: int8 support must be declared exactly when it makes int8")
    out += [f"{spec.name}: not_offered names {p}, which it exports or is no precision" for p, _ in spec.not_offered
            if p in spec.precisions or p not in PRECISIONS]
    if spec.int8 and not set(spec.int8.calib_methods) <= set(CALIB_METHODS):
        out.append(f"{spec.name}: unknown calibration methods {spec.int8.calib_methods}")
    names = list(formats)
    if spec.built_from and (spec.built_from not in formats or names.index(spec.built_from) > names.index(spec.name)):
        out.append(f"{spec.name}: built from {spec.built_from}, which is not registered before it")
    return out


def registry_problems(formats: dict | None = None) -> list[str]:
    """Everything wrong with a registry (the real one by default): [] when consistent."""
    formats = registry.FORMATS if formats is None else formats
    extras, out = _extras(), []
    for key, spec in formats.items():
        if key != spec.name:
            out.append(f"{key}: registered under another name than its spec's {spec.name!r}")
        out += _row_problems(spec, formats, extras) + _code_problems(spec)
    suffixes = [s.suffix for s in formats.values() if s.by_suffix]
    out += [f"suffix {x} is claimed by two formats" for x in sorted({x for x in suffixes if suffixes.count(x) > 1})]
    files = [f.name for s in formats.values() for f in s.files] + [c for s in formats.values() for f in s.files
                                                                   for c in f.companions]
    out += [f"file {x} is named by two rows" for x in sorted({x for x in files if files.count(x) > 1})]
    return out


def test_the_registry_is_consistent():
    assert registry_problems() == []
    assert set(registry.FORMATS) == {"onnx", "torchscript", "pt2", "openvino", "executorch", "tflite", "ort", "triton",
                                   "ncnn", "coreml", "web"}
    assert tuple(registry.FORMATS) == registry.PACKAGES  # one line per format: its package, named as the format
    for name, spec in registry.FORMATS.items():  # the registered row is the package's own SPEC
        assert importlib.import_module(spec.package).SPEC is spec and spec.package == f"tlexport.formats.{name}"


def test_the_consistency_check_catches_each_kind_of_broken_row(fake_packages):
    import dataclasses

    good = fake_packages["webdir"].SPEC
    onnx = registry.FORMATS["onnx"]
    cases = {
        "no builder": dataclasses.replace(good, package=fake_packages["nobuild"].__name__),
        "no reader": dataclasses.replace(good, package=fake_packages["noreader"].__name__),
        "RUNTIMES holds ()": dataclasses.replace(good, package=fake_packages["noreader"].__name__, provides=("x",)),
        "is provided by no format": dataclasses.replace(good, runtimes=(("tensorflow", "cpu"),)),
        "no runtime runs it": dataclasses.replace(good, runtimes=()),
        "claimed by two formats": dataclasses.replace(good, suffix=".onnx", folder=False),
        "is not in pyproject.toml": dataclasses.replace(good, extra="webgpu"),
        "does not install": dataclasses.replace(good, extra="triton", needs=registry.FORMATS["openvino"].needs),
        "exactly when it makes int8": dataclasses.replace(good, int8=onnx.int8),
        "not registered before it": dataclasses.replace(good, built_from="triton"),
        "which it exports or is no precision": dataclasses.replace(good, not_offered=(("fp32", "it does"),)),
    }
    for problem, spec in cases.items():
        formats = {"onnx": onnx, "triton": registry.FORMATS["triton"], "openvino": registry.FORMATS["openvino"]}
        formats = {**dict(list(formats.items())[:1]), "webdir": spec, **dict(list(formats.items())[1:])}
        found = registry_problems(formats)
        assert any(problem in p for p in found), (problem, found)
    assert registry_problems({"onnx": onnx, "webdir": good, "openvino": registry.FORMATS["openvino"],
                              "web": registry.FORMATS["web"]}) == []  # web provides onnx's browser runtime


# ---- the throwaway format, written as a package --------------------------------------------------
SOURCES = {
    "__init__.py": '''
        """webdir: an onnxruntime-web folder, model.onnx and meta.json (a throwaway test format)."""
        from tlexport.formats.spec import File, FormatSpec

        SPEC = FormatSpec(
            name="webdir", package=__name__, suffix=".webdir", folder=True, built_from="onnx",
            description="an ONNX model and its metadata in a folder",
            files=(File("fp32", "model.webdir"),),
            runtimes=(("webdir-rt", "cpu"),), provides=("webdir-rt",),
        )
        ''',
    "build.py": '''
        import shutil

        from tlexport.exporters.job import Artifact
        from tlexport.formats.onnx.stage import stage
        from tlexport.tables.metadata import to_json

        from . import SPEC


        def build(job, say):
            out = []
            for precision in job.precisions:
                folder = job.staging / SPEC.file(precision).name
                folder.mkdir()
                shutil.copyfile(stage(job, precision, say).path, folder / "model.onnx")
                (folder / "meta.json").write_text(to_json(job.meta))
                out.append(Artifact(folder.name, SPEC.name, precision))
            return out
        ''',
    "metadata.py": '''
        import json


        def read(path):
            return json.loads((path / "meta.json").read_text())
        ''',
    "runtime.py": '''
        import numpy as np

        from tlexport.runtimes.base import Runtime


        class WebDirRuntime(Runtime):
            name = "webdir-rt"

            def _load(self):
                import onnxruntime as ort

                self.session = ort.InferenceSession(str(self.artifact / "model.onnx"), providers=["CPUExecutionProvider"])

            def _run(self, batch):
                return self.session.run(None, {"image": np.ascontiguousarray(batch, dtype=np.float32)})[0]


        RUNTIMES = (WebDirRuntime,)
        ''',
}
# Broken twins for the consistency check (each lacks one module) and a builder that skips.
BROKEN = {"nobuild": ("build.py",), "noreader": ("metadata.py", "runtime.py")}
SKIPS = {**SOURCES, "__init__.py": SOURCES["__init__.py"].replace(
    'files=(File("fp32", "model.webdir"),)', 'files=(File("fp32", "model.webdir"), File("fp16", "model.fp16.webdir"))'),
    "build.py": '''
        def build(job, say):
            return []  # declares fp16 (and fp32) in its spec, makes nothing
        '''}


@pytest.fixture(scope="module")
def fake_packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("fakeformats")
    made = {}
    variants = {"webdir": SOURCES, "skips": SKIPS,
                **{name: {k: v for k, v in SOURCES.items() if k not in drop} for name, drop in BROKEN.items()}}
    for name, sources in variants.items():
        pkg = root / f"tlx_fake_{name}"
        pkg.mkdir()
        for file, text in sources.items():
            (pkg / file).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    try:
        made = {name: importlib.import_module(f"tlx_fake_{name}") for name in variants}
        yield made
    finally:
        sys.path.remove(str(root))


@pytest.fixture
def webdir(fake_packages, monkeypatch):
    """The one registry line a real format adds, here for the length of a test."""
    monkeypatch.setitem(registry.FORMATS, "webdir", fake_packages["webdir"].SPEC)
    return fake_packages["webdir"].SPEC


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _folder_digest(folder: Path) -> str:
    """The documented digest of a folder artifact, computed independently of tlexport."""
    lines = "".join(f"{p.relative_to(folder).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                    for p in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()) if p.is_file())
    return hashlib.sha256(lines.encode()).hexdigest()


def test_a_registered_folder_format_exports_verifies_and_is_found_everywhere(webdir, fake_run, tiny_data, tmp_path):
    from tlexport import runtimes
    from tlexport.formats.metadata import read_metadata
    from tlexport.tables.artifacts import list_artifacts

    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "webdir", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    (art,) = manifest["artifacts"]  # the ONNX file it was converted from is not published
    folder = out / "model.webdir"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.webdir"]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx"]
    assert (art["format"], art["precision"], art["devices"]) == ("webdir", "fp32", ["cpu"])
    assert art["verified"] is True and art["verification"]["max_abs"] < 1e-4, art  # run by its own runtime
    assert art["size"] == sum(p.stat().st_size for p in folder.iterdir())
    assert art["sha256"] == _folder_digest(folder)
    assert read_metadata(folder)["classes"] == CLASSES
    (entry,) = list_artifacts(out)
    assert entry.path == folder and entry.format == "webdir"
    (manifest_path := out / "manifest.json").unlink()  # without a manifest: found by its fixed name
    found, _ = runtimes.discover(out, names=["webdir-rt"])
    assert [(f.name, f.artifact) for f in found] == [("webdir-rt", folder)]
    manifest_path.write_text(json.dumps(manifest))
    p = invoke("parity", out, "--runtimes", "webdir-rt", "--json", tmp_path / "p.json")
    assert p.exit_code == 0, p.output
    rows = [x for x in json.loads((tmp_path / "p.json").read_text())["results"] if x["runtime"] == "webdir-rt"]
    assert len(rows) == 1 and rows[0]["passed"] and Path(rows[0]["artifact"]) == folder
    got = invoke("predict", folder, tiny_data / "val" / "circle", "--json")  # the folder is the model
    assert got.exit_code == 0, got.output
    assert {x["top"][0]["label"] for x in json.loads(got.stdout)} <= set(CLASSES) and len(json.loads(got.stdout)) == 4


def test_a_folder_artifact_is_replaced_whole_and_removed_when_stale(webdir, fake_run, tmp_path):
    out = tmp_path / "export"
    assert invoke("export", fake_run, "--format", "webdir", "--out", out, "--no-verify").exit_code == 0
    (out / "model.webdir" / "left-over.txt").write_text("from the old export")
    r = invoke("export", fake_run, "--format", "webdir,onnx", "--out", out, "--no-verify")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "model.webdir").iterdir()) == ["meta.json", "model.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.webdir"]
    r = invoke("export", fake_run, "--format", "onnx", "--out", out, "--no-verify")  # exporting again adds
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.webdir"]
    r = invoke("export", fake_run, "--format", "onnx", "--out", out, "--no-verify", "--replace")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]  # no staging, no aside copy


def test_a_builder_that_skips_a_declared_precision_fails_the_export(fake_packages, monkeypatch, fake_run, tmp_path):
    monkeypatch.setitem(registry.FORMATS, "webdir", fake_packages["skips"].SPEC)
    r = invoke("export", fake_run, "--format", "webdir", "--precision", "fp16", "--out", tmp_path / "x", "--no-verify")
    assert r.exit_code == 1, r.output
    assert "webdir builder made no fp16 artifact although the format registry declares webdir fp16" in r.output
    assert not (tmp_path / "x").exists()


def test_the_manifest_check_and_the_cli_derive_from_the_registry(webdir, tmp_path):
    from tlexport.errors import ArtifactError
    from tlexport.tables.artifacts import read_manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [
        {"file": "model.onnx", "format": "webdir", "precision": "fp32"}]}))
    with pytest.raises(ArtifactError, match="lacks the .webdir suffix of format webdir"):
        read_manifest(tmp_path)
    r = invoke("export", "--help")
    assert r.exit_code == 0
    for spec in registry.FORMATS.values():
        if spec.name != "webdir":  # help was written when the CLI was imported, before this test
            assert spec.name in r.output and spec.description.split()[0] in r.output
    for extra in {s.extra for s in registry.FORMATS.values() if s.extra and s.name != "webdir"}:
        assert f".[{extra}]" in r.output


def test_a_precision_not_offered_is_skipped_with_its_reason_and_the_docs_say_how_apps_use_it(webdir, monkeypatch):
    import dataclasses

    from tlexport.exporters.pipeline import plan
    from tlexport.formats.doc import render
    from tlexport.tables import archs

    spec = dataclasses.replace(webdir, not_offered=(("int8", "its quantizer is not on PyPI"),),
                               usage="Copy the folder into the app; load `model.onnx` with onnxruntime-web.")
    monkeypatch.setitem(registry.FORMATS, "webdir", spec)
    todo, skipped = plan(("webdir",), ("fp32", "int8"), archs.get("resnet18"), "cpu")
    assert todo == [("webdir", ("fp32",))]
    assert skipped == ["webdir int8: webdir is exported in fp32 only (its quantizer is not on PyPI)"]
    page = render()
    assert "- `webdir`: an ONNX model and its metadata in a folder. Not offered: int8: its quantizer is not on PyPI." in page
    assert "## In an app\n\n" in page and "### `webdir`\n\nCopy the folder into the app; load `model.onnx`" in page


# ---- precisions: one place -----------------------------------------------------------------------
def test_the_plan_enforces_precisions_gpu_only_files_and_arch_refusals():
    import dataclasses

    from tlexport.exporters.pipeline import plan
    from tlexport.tables import archs

    arch = archs.get("resnet18")
    todo, skipped = plan(("pt2", "torchscript", "tflite"), ("fp32", "fp16", "int8"), arch, "cpu")
    assert todo == [("torchscript", ("fp32",)), ("pt2", ("fp32",)), ("tflite", ("fp32", "int8"))]  # registry order
    assert "torchscript fp16: needs --device cuda" in " ".join(skipped)
    assert any(s.startswith("pt2 int8: pt2 is exported in fp32 only") for s in skipped)
    todo, _ = plan(("torchscript",), ("fp16",), arch, "cuda")
    assert todo == [("torchscript", ("fp16",))]
    refusing = dataclasses.replace(arch, unsupported={"tflite/int8": "its quantizer mangles this net"})
    todo, skipped = plan(("tflite",), ("fp32", "int8"), refusing, "cpu")
    assert todo == [("tflite", ("fp32",))] and any("its quantizer mangles this net" in s for s in skipped)


# ---- int8 options mean one thing, or are refused -------------------------------------------------
@pytest.mark.parametrize("args,words", [
    (["--format", "tflite", "--int8-fallback", "stem,head"], ["--int8-fallback stem,head", "tflite", "cannot keep layers"]),
    (["--format", "executorch", "--calib-method", "entropy"], ["--calib-method entropy", "executorch", "minmax"]),
    # refused up front only when no requested format can honour it (onnx,tflite: tflite's int8 alone fails)
    (["--format", "tflite,executorch", "--calib-method", "percentile"], ["--calib-method percentile", "tflite"]),
    (["--calib-method", "kl"], ["unknown calibration method kl"]),
])
def test_an_int8_option_a_format_cannot_honour_is_refused_up_front(fake_run, tmp_path, args, words):
    r = invoke("export", fake_run, "--precision", "int8", "--out", tmp_path / "x", *args)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and line.startswith("Error: ") and all(w in line for w in words), line
    assert not (tmp_path / "x").exists()


def test_calib_method_is_refused_for_an_int8_that_is_not_calibrated(webdir, monkeypatch):
    """Weight-only int8 (no activation ranges) honours no --calib-method: refused in one line."""
    import dataclasses

    from tlexport.errors import UsageError
    from tlexport.exporters.options import Calibration, Int8Options, check_int8
    from tlexport.formats.spec import File, Int8Support

    spec = dataclasses.replace(webdir, files=(*webdir.files, File("int8", "model.int8.webdir")),
                               int8=Int8Support((), "none (weights only)", per_layer=False, why="weight-only int8"))
    monkeypatch.setitem(registry.FORMATS, "webdir", spec)
    check_int8(("webdir",), ("int8",), Int8Options())  # without the option: nothing to refuse
    with pytest.raises(UsageError, match=r"^--calib-method minmax: webdir int8 is not calibrated \(weight-only int8\); "
                                         r"drop --calib-method$"):
        check_int8(("webdir",), ("fp32", "int8"), Int8Options(calibration=Calibration("minmax")))


def test_int8_options_of_formats_without_int8_are_not_refused(fake_run, tmp_path):
    """--calib-method is about int8: asking for pt2 fp32 with it is no contradiction."""
    from tlexport.exporters.pipeline import check_options, make_options

    formats, _ = check_options(("pt2",), ("fp32", "int8"), make_options(calib_method="entropy", int8_fallback="stem"))
    assert formats == ("pt2",)


def test_pt2e_minmax_calibration_observes_the_data_min_and_max():
    """`--calib-method minmax` on ExecuTorch/LiteRT: activations' ranges are the observed
    extremes (the quantizers' default is a histogram observer)."""
    pytest.importorskip("executorch")
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from tlexport.exporters.int8 import pt2e_config

    base = get_symmetric_quantization_config(is_per_channel=True)
    assert pt2e_config(base, None) is base
    minmax = pt2e_config(base, "minmax")
    assert minmax.input_activation.observer_or_fake_quant_ctr.p.func is MinMaxObserver
    assert base.input_activation.observer_or_fake_quant_ctr.p.func is HistogramObserver
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), XNNPACKQuantizer().set_global(minmax))
    with torch.no_grad():
        prepared(x)
    observers = [m for m in prepared.modules() if isinstance(m, MinMaxObserver)]
    assert observers and any(torch.isclose(o.min_val, x.min()) and torch.isclose(o.max_val, x.max()) for o in observers)


# ---- onnxruntime's execution providers as data -------------------------------------------------
def test_onnxruntime_providers_are_rows_of_one_runtime_class(tmp_path):
    from tlexport import runtimes
    from tlexport.formats.onnx.runtime import PROVIDERS, OnnxRuntime

    assert [p.name for p in PROVIDERS] == ["onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt"]
    made = {p.name: runtimes.runtime_class(p.name)(tmp_path / "m.onnx", "fp16") for p in PROVIDERS}
    assert {type(r) for r in made.values()} == {OnnxRuntime}
    assert {n: (r.name, r.device) for n, r in made.items()} == {
        "onnxruntime": ("onnxruntime", "cpu"), "onnxruntime-cuda": ("onnxruntime-cuda", "cuda"),
        "onnxruntime-tensorrt": ("onnxruntime-tensorrt", "cuda")}
    cpu, cuda, trt = PROVIDERS
    assert cpu.providers("fp32") == ["CPUExecutionProvider"]
    assert cuda.providers("fp32") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert trt.providers("fp16") == [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                                     "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "TensorRT int8" in trt.unavailable_reason("cuda", "int8")
    assert cpu.unavailable_reason("cuda", "fp32") == "the CPU provider does not run on CUDA"
    clone = made["onnxruntime-cuda"].clone(2)
    assert (clone.provider, clone.threads, clone.label) == (cuda, 2, "onnxruntime-cuda/fp16/cuda")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime has no CUDAExecutionProvider" in made["onnxruntime-cuda"].unavailable_reason("cuda", "fp32")


# ---- folders as artifacts -------------------------------------------------------------------------
def test_folder_digest_depends_on_names_and_contents_only(tmp_path):
    import os

    from tlexport.tables.artifacts import artifact_sha256, artifact_size, replace_artifact

    a, b = tmp_path / "a.webdir", tmp_path / "b.webdir"
    for folder, order in ((a, ("x", "sub/y")), (b, ("sub/y", "x"))):  # written in another order
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(name * 3)
    os.utime(b / "x", (1, 1))
    assert artifact_sha256(a) == artifact_sha256(b) == _folder_digest(a)
    assert artifact_size(a) == len("x" * 3) + len("sub/y" * 3)
    (b / "x").write_text("changed")
    assert artifact_sha256(a) != artifact_sha256(b)
    (b / "x").write_text("xxx")
    (b / "x").rename(b / "z")
    assert artifact_sha256(a) != artifact_sha256(b)
    replace_artifact(a, b)  # a folder over a folder: whole, nothing of the old one left
    assert not a.exists() and sorted(p.relative_to(b).as_posix() for p in b.rglob("*")) == ["sub", "sub/y", "x"]
    assert not list(tmp_path.glob(".*"))


# ---- the generated page ---------------------------------------------------------------------------
def test_docs_formats_md_is_generated_from_the_registry():
    from tlexport.formats.doc import render

    committed = (ROOT / "docs" / "formats.md").read_text()
    assert committed == render(), "docs/formats.md is stale: python -m tlexport.formats.doc > docs/formats.md"
    for spec in registry.FORMATS.values():
        assert f"| `{spec.name}` |" in committed
        assert all(f"`{f.name}`" in committed for f in spec.files if f.role == MODEL)
