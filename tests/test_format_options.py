"""A format owns its options: a throwaway format (`stamp`, written as a package in a temporary
folder and registered with the one registry line) brings an options class whose field is its
flag. The flag and its help show up in `tlexport export --help` without any change to the CLI,
the value reaches its builder through `job.options.of("stamp")` from the CLI, from `export()`'s
flat keyword and from `ExportOptions(format_options=...)`, and its own check refuses it up front
when the format is not exported. The real formats' options keep their flags and keywords."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.formats import registry

SOURCES = {
    "__init__.py": '''
        """stamp: a text file holding the metadata and the stamp option's value (a throwaway test format)."""
        from tlexport.formats.spec import File, FormatSpec

        SPEC = FormatSpec(
            name="stamp", package=__name__, suffix=".stamp",
            description="a text file stamped with its option",
            files=(File("fp32", "model.stamp"),),
            runtimes=(("torch-eager", "cpu"),),
            options="StampOptions",
        )
        ''',
    "options.py": '''
        from dataclasses import dataclass

        from tlexport.errors import UsageError
        from tlexport.formats.options import option


        @dataclass(frozen=True)
        class StampOptions:
            level: int = option(3, "How hard the stamp presses (1-9).", flag="--stamp-level")
            ink: str = option("black", "The stamp's ink.", flag="--stamp-ink", choices=("black", "red"))

            def check(self, formats):
                if (self.level, self.ink) != (3, "black") and "stamp" not in formats:
                    raise UsageError("--stamp-level/--stamp-ink apply to .stamp files: add --format stamp")
        ''',
    "build.py": '''
        import json

        from tlexport.exporters.job import Artifact

        from . import SPEC


        def build(job, say):
            """The stamp file of `job.precision`, holding what the builder was handed."""
            mine = job.options.of("stamp")
            path = job.staging / SPEC.file(job.precision).name
            path.write_text(json.dumps({"level": mine.level, "ink": mine.ink, "meta": job.meta}))
            return [Artifact(path.name, SPEC.name, job.precision, notes=[f"stamped at level {mine.level}"])]
        ''',
    "metadata.py": '''
        import json


        def read(path):
            return json.loads(path.read_text())["meta"]
        ''',
}


@pytest.fixture(scope="module")
def stamp_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("stampformat")
    pkg = root / "tlx_fake_stamp"
    pkg.mkdir()
    for file, text in SOURCES.items():
        (pkg / file).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("tlx_fake_stamp")
    finally:
        sys.path.remove(str(root))


@pytest.fixture
def stamp(stamp_package, monkeypatch):
    """The one registry line a real format adds, here for the length of a test."""
    monkeypatch.setitem(registry.FORMATS, "stamp", stamp_package.SPEC)
    return stamp_package


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_format_brings_its_flags_to_export_help(stamp):
    r = invoke("export", "--help")
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "--stamp-level INTEGER How hard the stamp presses (1-9). [default: 3]" in flat
    assert "--stamp-ink [black|red] The stamp's ink. [default: black]" in flat
    # the real formats' options keep their flags, derived the same way
    for flag in ("--opset", "--target RUNTIME==VERSION", "--fp16-io", "--bake-preprocess", "--ort-target [portable|amd64]"):
        assert flag in flat


def test_the_flags_leave_with_the_format(stamp_package):
    assert "stamp" not in registry.FORMATS
    assert "--stamp-level" not in invoke("export", "--help").output


def test_the_value_reaches_its_builder_from_the_cli_and_the_api(stamp, fake_run, tmp_path):
    from tlexport import export
    from tlexport.exporters.options import ExportOptions

    out = tmp_path / "cli"
    r = invoke("export", fake_run, "--format", "stamp", "--stamp-level", 7, "--stamp-ink", "red", "--no-verify",
               "--out", out, "--json")
    assert r.exit_code == 0, r.output
    stamped = json.loads((out / "model.stamp").read_text())
    assert (stamped["level"], stamped["ink"]) == (7, "red")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["notes"] for a in manifest["artifacts"]] == [["stamped at level 7"]]

    # export()'s flat keyword (its name: the flag's), and the typed options keyed by format name
    keyword = export(fake_run, formats=("stamp",), out=tmp_path / "kw", verify=False, stamp_level=5)
    typed = export(fake_run, ("stamp",), ("fp32",), ExportOptions(verify=False, format_options={
        "stamp": stamp.options.StampOptions(level=2)}), out=tmp_path / "typed")
    for result, level in ((keyword, 5), (typed, 2)):
        assert json.loads((result.out_dir / "model.stamp").read_text())["level"] == level
        assert result.artifacts[0].notes == [f"stamped at level {level}"]


def test_its_own_check_refuses_the_option_without_the_format_and_click_refuses_a_bad_choice(stamp, fake_run, tmp_path):
    r = invoke("export", fake_run, "--format", "onnx", "--stamp-level", 7, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--stamp-level/--stamp-ink apply to .stamp files: add --format stamp" in r.output
    assert not (tmp_path / "x").exists()
    r = invoke("export", fake_run, "--format", "stamp", "--stamp-ink", "blue", "--out", tmp_path / "y")
    assert r.exit_code == 2 and "--stamp-ink" in r.output


def test_options_are_typed_by_format_and_unknown_keywords_are_refused(stamp):
    from tlexport.errors import UsageError
    from tlexport.exporters.options import ExportOptions, format_keywords
    from tlexport.exporters.pipeline import make_options
    from tlexport.formats.onnx.options import OnnxOptions
    from tlexport.formats.ort.options import OrtOptions

    assert {k: v for k, v in format_keywords().items() if v[0] in ("onnx", "ort")} == {
        "opset": ("onnx", "opset"), "targets": ("onnx", "targets"), "fp16_io": ("onnx", "fp16_io"),
        "bake_preprocess": ("onnx", "bake_preprocess"), "ort_target": ("ort", "target")}
    made = make_options(opset=17, ort_target="amd64", stamp_ink="red", calib_method="entropy")
    assert made.of("onnx") == OnnxOptions(opset=17) and made.of("ort") == OrtOptions("amd64")
    assert made.of("stamp").ink == "red" and made.int8.calibration.method == "entropy"
    assert ExportOptions().of("ort") == OrtOptions()  # not given: the format's defaults
    with pytest.raises(TypeError, match="unexpected keyword argument 'opsett'"):
        make_options(opsett=17)
    with pytest.raises(UsageError, match="must be a OrtOptions"):
        ExportOptions(format_options={"ort": OnnxOptions()})
    with pytest.raises(UsageError, match="'pt2' is no format with options"):
        ExportOptions(format_options={"pt2": OnnxOptions()})
