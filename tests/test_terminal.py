"""What a user sees in a terminal: long work names its stage and counts what it can, third-party
chatter stays off the screen (also what C++ writes to the file descriptors), a failed export lists
its failures once, tables fit 80-120 columns without cutting a file name, `train` says what it is
about to do, and the bench's noise flag and plot tell files and busy cells apart."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import tlexport
from tlexport.cli import cli
from test_edge import needs_edge

ROOT = Path(tlexport.__file__).parents[1]
WIDTHS = (80, 100, 120)
# model.onnx, model.ort and Triton's copy: three files that all run on onnxruntime fp32 (bench
# used to print three rows reading "onnxruntime/fp32/cpu").
ONNX_FILES = ("model.onnx", "model.ort", "model_repository/classifier/1/model.onnx")


def invoke(*args, width: int | None = None):
    env = {"COLUMNS": str(width)} if width else {}
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture
def statuses(monkeypatch):
    """Every status line the command's progress display was given, as text."""
    from tlexport.cli import status

    seen: list[str] = []
    real = status.StatusLine.__call__

    def spy(self, line):
        seen.append(str(line))
        real(self, line)

    monkeypatch.setattr(status.StatusLine, "__call__", spy)
    return seen


@pytest.fixture(scope="module")
def three_onnx(fake_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("terminal") / "export"
    r = invoke("export", fake_run, "--format", "onnx,ort,triton", "--out", out, width=80)
    assert r.exit_code == 0, r.output
    return out, r.output


def _table_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith(("│", "┃"))]


def _assert_fits(output: str, width: int, files) -> None:
    """Every line within `width`, every file named whole on one line, no cell cut."""
    assert all(len(ln) <= width for ln in output.splitlines()), output
    rows = _table_lines(output)
    for name in files:
        assert any(name in ln for ln in rows), (name, output)
    assert not any("…" in ln for ln in rows), output


# ---- 5. long work is labelled and counted ---------------------------------------------------------
TRIAL_1 = r"trial 1(?:/≤?\d+)? \(all int8\)"  # "trial 1/1" with a bound (see the test below)


@needs_edge
def test_export_names_each_stage_and_counts_images_and_trials(edge_export_run):
    """The shared edge export (conftest.py) in a real process, its status lines as its display got
    them: every stage named, calibration images and int8 trials counted (the number of trials an
    int8 may need depends on the fallback policy: `1/\\d+`)."""
    statuses = edge_export_run.statuses
    seen = "\n".join(statuses)
    for line in (
        r"ONNX fp32 · waiting for torch\.onnx\.export \(dynamo\)",
        r"ONNX int8 · reading calibration images 35/35 images",
        rf"ONNX int8 · {TRIAL_1} · calibrating 35/35 images",
        rf"ONNX int8 · {TRIAL_1} · held-out check · onnxruntime/int8/cpu 12/12 images",
        r"ExecuTorch fp32 · waiting for executorch \(torch\.export, XNNPACK lowering\)",
        rf"ExecuTorch int8 · {TRIAL_1} · waiting for executorch \(calibration, XNNPACK lowering\)"
        r" · calibrating 35/35 images",
        rf"ExecuTorch int8 · {TRIAL_1} · held-out check · executorch/int8/cpu 12/12 images",
        r"verifying against torch-eager · model\.int8\.pte \(executorch/int8/cpu\) 12/12 images",
        r"verifying against torch-eager · model\.onnx \(onnxruntime/fp32/cpu\) 12/12 images",
    ):
        assert any(re.fullmatch(line, s) for s in statuses), (line, seen)
    # model.onnx, model.ort and their int8 twins; Triton's copies are the same bytes as ONNX's
    assert any(s.startswith("timing the verified files on this machine · onnxruntime: 4 files, round 1/")
               for s in statuses), seen


def test_an_int8_trial_counts_against_its_bound_when_there_is_one():
    """"trial 1/1" under --int8-fallback none, "trial 2/≤5" once a search is sized, "trial 1" while
    the first trial may be the only one (the shared edge export's `auto`)."""
    from tlexport import progress as P
    from tlexport.exporters.int8 import _Counted

    seen = []
    with P.listening(seen.append):
        P.stage("X int8")
        for bound, keep in ((1, ()), (None, ()), (5, ("stem",))):
            trial = _Counted(lambda k: None, bound)
            trial(())
            if keep:
                trial(keep)
    assert {"X int8 · trial 1/1 (all int8)", "X int8 · trial 1 (all int8)",
            "X int8 · trial 2/≤5 (1 layer(s) float)"} <= set(seen), seen


def test_eval_shows_the_check_and_the_classification_counting(fake_run, tmp_path, statuses):
    r = invoke("eval", fake_run, "--device", "cpu", "--out", tmp_path / "eval")
    assert r.exit_code == 0, r.output
    assert "eval fake · checking images 12/12 files" in statuses, statuses
    assert "eval fake · classifying 12/12 images" in statuses, statuses


def test_train_says_what_it_is_about_to_do(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "circle" / "imageNotFound.gif").write_bytes(b"GIF89a")  # not a type tlexport reads
    (data / "train" / "square" / "broken.png").write_bytes(b"not a png")  # unreadable
    run = tmp_path / "run"
    r = invoke("train", "--data", data, "--arch", "resnet18", "--weights", "none", "--image-size", 32,
               "--epochs", 1, "--batch-size", 8, "--workers", 0, "--device", "cpu", "--precision", "fp32",
               "--out", run)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "resnet18 (weights: none) · 3 classes: circle, square, triangle · 36 train / 12 val images" in out, out
    assert (f"skipped 2 file(s) that are not readable images: broken.png, imageNotFound.gif; "
            f"list in {run / 'skipped.txt'}") in out, out
    listed = (run / "skipped.txt").read_text()
    assert "broken.png" in listed and "imageNotFound.gif\tnot read: .gif is not an image type" in listed
    assert "device cpu · float32 (--precision fp32) · 1 epoch · batch 8 · lr 0.001" in out, out
    assert out.index("device cpu") < out.index("epoch 1")  # before the work starts


# ---- 5. third-party chatter off the terminal, errors kept ------------------------------------------
def _tlexport(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "tlexport", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


NOISE = ("Removing initializer", "W:onnxruntime", "XNNPACK delegate", "cpuinfo", "_pytree", "Warning", "WARNING",
         "INFO", "absl")


@needs_edge
def test_no_third_party_lines_reach_the_terminal(edge_export_run):
    """In a real process (the converters' C++ writes to fds 1 and 2, which CliRunner cannot see):
    export's --json stdout is the JSON alone and nothing else is printed (the shared edge export,
    conftest.py: ONNX, ExecuTorch, LiteRT, ORT and Triton, fp32 and int8); parity running the
    LiteRT and onnxruntime interpreters prints its table and nothing of theirs."""
    p = edge_export_run
    assert [a["file"] for a in json.loads(p.stdout)["artifacts"]][:2] == ["model.onnx", "model.int8.onnx"]
    assert p.stderr == "", p.stderr
    p = _tlexport("parity", edge_export_run.folder, "--runtimes", "onnxruntime,litert", "--max-images", 4)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "model.int8.tflite" in p.stderr and "PASS" in p.stderr
    for noise in NOISE:
        assert noise not in p.stdout + p.stderr, (noise, p.stdout + p.stderr)


def test_silenced_keeps_a_failed_calls_output_and_restores_the_fds(capfd):
    from tlexport.quiet import captured, silenced

    with pytest.raises(RuntimeError) as info:
        with silenced():
            os.write(2, b"E cpuinfo_utils.cpp:71 the real cause\n")  # as C++ writes it
            raise RuntimeError("converter failed")
    assert "the real cause" in captured(info.value)
    assert "the real cause" not in capfd.readouterr().err  # not shown on the terminal as it happened
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # fd 2 is the terminal again


# ---- 6. tables that fit ------------------------------------------------------------------------------
@pytest.mark.parametrize("width", WIDTHS)
def test_parity_names_every_file_whole_at_any_width(three_onnx, width):
    out, _ = three_onnx
    r = invoke("parity", out, "--runtimes", "onnxruntime", "--max-images", 4, width=width)
    assert r.exit_code == 0, r.output
    _assert_fits(r.output, width, ONNX_FILES)
    assert sum(ln.count("onnxruntime") for ln in _table_lines(r.output)) == 3


def test_parity_wide_has_every_column(three_onnx):
    out, _ = three_onnx
    narrow = invoke("parity", out, "--runtimes", "onnxruntime", "--max-images", 4, width=100)
    assert narrow.exit_code == 0, narrow.output
    assert "--wide adds:" in narrow.output and "cos min" in narrow.output  # the caption says what is left out
    r = invoke("parity", out, "--runtimes", "onnxruntime", "--max-images", 4, "--wide", width=100)
    assert r.exit_code == 0, r.output
    assert "--wide adds" not in r.output
    rows = _table_lines(r.output)
    assert all(any(name in ln for ln in rows) for name in ONNX_FILES), r.output
    (header,) = [ln for ln in rows if ln.startswith("┃")]  # one line: headers are not squeezed or folded
    assert all(f" {name} " in header for name in ("file", "runtime", "mean abs", "cos min", "meta", "batch")), header


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_has_a_file_column_that_fits(three_onnx, width):
    out, _ = three_onnx
    r = invoke("bench", out, "--runtimes", "onnxruntime", "--iters", 2, "--warmup", 1, width=width)
    assert r.exit_code == 0, r.output
    _assert_fits(r.output, width, ONNX_FILES)


def test_the_export_table_fits_80_columns(three_onnx):
    _, output = three_onnx
    _assert_fits(output, 80, ONNX_FILES)


@pytest.mark.parametrize("width", WIDTHS)
def test_archs_keeps_params_and_gflops(width):
    r = invoke("archs", width=width)
    assert r.exit_code == 0, r.output
    rows = _table_lines(r.output)
    assert all(len(ln) <= width for ln in r.output.splitlines())
    header = rows[0]
    assert "params" in header and "GFLOPs" in header
    (row,) = [x for x in json.loads(invoke("archs", "--json").stdout) if x["arch"] == "resnet18"]
    assert any("resnet18" in ln and f"{row['params_m']:.1f} M" in ln and f"{row['gflops']:.2f}" in ln
               for ln in rows), r.output


# ---- 5. one list of failures ----------------------------------------------------------------------
def test_a_partial_export_lists_each_failure_once(fake_run, tmp_path, monkeypatch):
    from tlexport.errors import ExportError
    from tlexport.formats.ort import build as ort_build

    def broken(src, dst, config, *options):
        raise ExportError(f"ORT conversion of {src.name} failed (simulated, a long reason)")

    monkeypatch.setattr(ort_build, "to_ort", broken)
    out = tmp_path / "export"
    r = invoke("export", fake_run, "--format", "onnx,ort", "--out", out)
    assert r.exit_code == 1, r.output
    assert r.output.count("simulated, a long reason") == 1, r.output
    assert r.output.strip().splitlines()[-1] == f"Error: 1 of 2 artifacts failed (listed above); 1 published in {out}"


# ---- 8. bench: our own browser is not competing load; the plot ---------------------------------------
def test_a_child_process_s_cpu_counts_as_our_own():
    """A browser bench's Chromium is our child: its CPU is ours, not a neighbour's."""
    from tlexport import measure

    code = ("import os, sys\n"
            "while sum(int(v) for v in open('/proc/self/stat').read().rsplit(')', 1)[1].split()[11:13]) < 30:\n"
            "    pass\n"
            "print('busy', flush=True)\n"
            "sys.stdin.read()\n")
    before = measure._family_ticks(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "busy\n"  # it has used >= 30 ticks and is still alive
        assert measure._family_ticks(os.getpid()) - before >= 30
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def _cell(artifact, runtime, batch, p50, noisy=False):
    from tlexport.benchmark import BenchResult

    return BenchResult(runtime=runtime, precision="fp32", device="cpu", batch_size=batch, p50_ms=p50, p90_ms=p50 * 1.1,
                       p99_ms=p50 * 1.2, mean_ms=p50, std_ms=0.1, min_ms=p50, throughput=1e3 * batch / p50, iters=10,
                       artifact=artifact, noisy=noisy)


@pytest.fixture
def figures(monkeypatch):
    from tlexport import render

    drawn = []
    monkeypatch.setattr(render, "_save", lambda fig, path, dpi=100: drawn.append(fig) or Path(path))
    return drawn


def test_the_plot_draws_one_line_per_file_and_rings_noisy_points(figures, tmp_path):
    from types import SimpleNamespace

    from tlexport.render import latency_vs_batch

    files = (("model.onnx", "onnxruntime"), ("model.ort", "onnxruntime"), (None, "torch-eager"))
    cells = [_cell(f, rt, b, 2.0 * b, noisy=(f == "model.ort" and b == 8)) for f, rt in files for b in (1, 8, 32)]
    latency_vs_batch(SimpleNamespace(results=cells), tmp_path / "p.png")
    ax_lat, ax_thr = figures[0].axes
    labels = ax_thr.get_legend_handles_labels()[1]
    assert labels == ["model.onnx · onnxruntime", "model.ort · onnxruntime", "weights · torch-eager"]
    from matplotlib.collections import PathCollection

    rings = [c for c in ax_lat.collections if isinstance(c, PathCollection)]  # the markers over noisy cells
    assert [tuple(map(float, c.get_offsets()[0])) for c in rings] == [(8.0, 16.0)]
    assert "noisy (busy machine): do not quote" in ax_lat.get_legend_handles_labels()[1]


def test_one_batch_size_is_drawn_as_bars_per_file(figures, tmp_path):
    from types import SimpleNamespace

    from tlexport.render import latency_vs_batch

    cells = [_cell("model.onnx", "onnxruntime", 1, 2.0), _cell("model.ort", "onnxruntime", 1, 2.2, noisy=True)]
    latency_vs_batch(SimpleNamespace(results=cells), tmp_path / "p.png")
    ax_lat = figures[0].axes[0]
    bars = ax_lat.patches
    assert [round(b.get_width(), 3) for b in bars] == [2.0, 2.2]
    assert [t.get_text() for t in ax_lat.get_yticklabels()] == ["model.onnx · onnxruntime", "model.ort · onnxruntime"]
    assert [b.get_hatch() for b in bars] == [None, "//"]  # the noisy one is marked
    assert any("2.2 ms (noisy)" in t.get_text() for t in ax_lat.texts)


def test_the_export_table_says_how_much_of_an_int8_file_is_int8():
    """#26.4: the int8 record (layers int8 of all, size and speed against fp32) is a column; a file
    that is neither smaller nor faster says so in its cell."""
    from types import SimpleNamespace

    from rich.console import Console

    from tlexport.render import export_table

    def art(file, precision, rec):
        return SimpleNamespace(file=file, format="onnx", precision=precision, size=1_000_000, companions=[],
                               verification={"max_abs": 1e-3, "top1_agreement": 1.0}, verified=True, int8=rec)

    result = SimpleNamespace(
        artifacts=[art("model.onnx", "fp32", None),
                   art("model.int8.onnx", "int8", {"quantized": 21, "total": 21, "size_ratio": 0.253,
                                                   "speedup": 2.31, "int8_real": True}),
                   art("model.int8.xml", "int8", {"quantized": 1, "total": 21, "size_ratio": 0.84,
                                                  "speedup": 1.04, "int8_real": False})],
        out_dir=Path("export"), seconds=1.0, skipped=[], failed=[], notes=[])
    con = Console(width=200, record=True, color_system=None)
    export_table(con, result, wide=True)
    text = con.export_text()
    assert "21/21, 0.25x, 2.3x" in text, text
    assert "1/21, 0.84x, 1.0x (neither smaller nor faster)" in text, text
    (fp32_row,) = [ln for ln in text.splitlines() if "model.onnx " in ln]
    assert fp32_row.rstrip(" │").endswith("-"), fp32_row
