"""tlexport bench: timing statistics, report schema, files, CLI errors, and a real tiny export."""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tlexport
from tlexport.cli import cli
from tlexport.tables.artifacts import check_choices

B = importlib.import_module("tlexport.benchmark")


class FakeRuntime:
    """Implements the Runtime interface without a model: logits are a function of the input, and
    every batch it is given is remembered so tests can check what the timer fed it."""

    def __init__(self, name="torch-eager", precision="fp32", device="cpu", fail_at=None,
                 fail_load=False, rows=None, classes=3):
        self.name, self.precision, self.device = name, precision, device
        self.artifact, self.metadata = None, {"preprocess": {"crop": 8}}
        self.fail_at, self.fail_load, self.rows, self.classes = fail_at, fail_load, rows, classes
        self.seen: list[np.ndarray] = []
        self.syncs = 0
        self.threads = None

    @property
    def label(self):
        return f"{self.name}/{self.precision}/{self.device}"

    def set_threads(self, n):
        self.threads = n

    def load(self):
        if self.fail_load:
            raise tlexport.errors.RuntimeUnavailable("cannot load this one")
        return self

    def run(self, batch):
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("device lost\nsecond line of a long message")
        self.seen.append(batch.copy())
        n = self.rows if self.rows is not None else batch.shape[0]
        return np.tile(batch.reshape(batch.shape[0], -1)[:1, : self.classes], (n, 1))

    def synchronize(self):
        self.syncs += 1

    def clone(self, threads):
        """A fresh session of the same kind (bench's concurrency mode opens one per stream)."""
        twin = FakeRuntime(self.name, self.precision, self.device, classes=self.classes)
        twin.threads = threads
        return twin


# ---- time_runtime ------------------------------------------------------------------------------
def test_time_runtime_counts_iterations_and_orders_statistics():
    rt = FakeRuntime()
    r = B.time_runtime(rt, batch_size=2, warmup=3, iters=25, inputs=4)
    assert r.error is None
    assert r.iters == 25
    assert len(rt.seen) == 3 + 25  # warm-up calls are made but not counted
    assert rt.syncs >= 25  # synchronised around every timed call
    assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms
    assert r.mean_ms > 0 and r.std_ms >= 0
    assert r.throughput == pytest.approx(2 / (r.mean_ms / 1e3))
    assert r.speedup_vs_eager is None  # only bench() knows the baseline


def test_time_runtime_inputs_are_random_nonzero_and_rotate():
    rt = FakeRuntime()
    B.time_runtime(rt, batch_size=1, warmup=0, iters=8, inputs=4)
    seen = rt.seen
    assert all(np.abs(x).sum() > 0 for x in seen)
    assert all(x.dtype == np.float32 and x.shape == (1, 3, 8, 8) for x in seen)
    distinct = {x.tobytes() for x in seen}
    assert len(distinct) == 4  # exactly the pre-generated batches, each used
    assert all(not np.array_equal(seen[i], seen[i + 1]) for i in range(len(seen) - 1))
    assert np.array_equal(seen[0], seen[4])  # rotation, not fresh generation inside the loop
    assert 0.5 < float(np.std(np.concatenate([x.ravel() for x in seen]))) < 1.5  # normal-ish


def test_time_runtime_duration_budget_has_a_minimum_of_iterations():
    r = B.time_runtime(FakeRuntime(), batch_size=1, warmup=0, duration=1e-4)
    assert r.error is None and r.iters >= B.MIN_ITERS


def test_time_runtime_failure_mid_run_is_captured():
    rt = FakeRuntime(fail_at=7)
    r = B.time_runtime(rt, batch_size=1, warmup=2, iters=20)
    assert r.error is not None and "RuntimeError" in r.error and "device lost" in r.error
    assert "\n" not in r.error
    assert r.iters == 7 - 2  # the timed calls that completed before the failure
    assert r.p50_ms is None and r.throughput is None


def test_time_runtime_rejects_wrong_output_rows():
    r = B.time_runtime(FakeRuntime(rows=1), batch_size=4, warmup=0, iters=3)
    assert r.error is not None and "[4, K]" in r.error


def test_summarize_percentiles_match_numpy():
    times = list(np.linspace(0.001, 0.1, 101))
    s = B.summarize(times, batch_size=8)
    assert s["p50_ms"] == pytest.approx(np.percentile(np.array(times) * 1e3, 50))
    assert s["p99_ms"] == pytest.approx(np.percentile(np.array(times) * 1e3, 99))
    assert s["min_ms"] == pytest.approx(1.0)
    assert s["throughput"] == pytest.approx(8 / np.mean(times))


def test_fill_speedups_uses_eager_of_same_device_and_batch():
    mk = lambda name, dev, b, p50: B.BenchResult(name, "fp32", dev, b, p50_ms=p50)  # noqa: E731
    rs = [mk("torch-eager", "cpu", 1, 10.0), mk("onnxruntime", "cpu", 1, 4.0),
          mk("torch-eager", "cpu", 8, 40.0), mk("onnxruntime", "cpu", 8, 20.0),
          mk("onnxruntime", "cuda", 1, 1.0)]
    B.fill_speedups(rs)
    assert rs[0].speedup_vs_eager == pytest.approx(1.0)
    assert rs[1].speedup_vs_eager == pytest.approx(10.0 / 4.0)
    assert rs[3].speedup_vs_eager == pytest.approx(40.0 / 20.0)
    assert rs[4].speedup_vs_eager is None  # no eager measured on cuda


# ---- bench() and the CLI with a fake runtime layer -----------------------------------------------
@dataclass
class FakeSkipped:
    name: str
    precision: str
    device: str
    reason: str


@pytest.fixture
def fake_layer(monkeypatch, tmp_path):
    """Replace tlexport.runtimes with a fake offering eager, a good ORT, one that fails to load,
    one that fails mid-run, and one skipped; returns (export_dir, calls)."""
    calls = {}

    def discover(export_dir, *, run_dir=None, names=None, devices=("cpu",), precisions=None, threads=None,
                 trust_code=False):
        calls.update(names=names, devices=devices, threads=threads, trust_code=trust_code)
        found = [FakeRuntime("onnxruntime", "int8"), FakeRuntime("onnxruntime", "fp32"),
                 FakeRuntime("torchscript", "fp32", fail_load=True),
                 FakeRuntime("pt2", "fp32", fail_at=3), FakeRuntime("torch-eager", "fp32")]
        found = [r for r in found if names is None or r.name in names]
        return found, [FakeSkipped("onnxruntime-cuda", "fp32", "cuda", "no CUDA GPU")]

    fake = types.ModuleType("tlexport.runtimes")
    fake.discover = discover
    fake.RUNTIME_NAMES = ("torch-eager", "torchscript", "pt2", "onnxruntime", "onnxruntime-cuda", "openvino")
    fake.check_names = lambda names: check_choices(names, fake.RUNTIME_NAMES, "runtime")  # as the real one
    monkeypatch.setitem(sys.modules, "tlexport.runtimes", fake)
    monkeypatch.setattr(tlexport, "runtimes", fake, raising=False)
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "model.onnx").write_bytes(b"not read by the fake layer")
    return export_dir, calls


def test_bench_report_schema_and_failures_do_not_stop_others(fake_layer):
    export_dir, calls = fake_layer
    rep = B.bench(export_dir, batch_sizes=(1, 2), warmup=1, iters=5, threads=1)
    d = json.loads(json.dumps(rep.to_dict()))
    assert set(d) >= {"environment", "results"}
    for key in ("cpu", "usable_cores", "threads", "versions", "gpu"):
        assert key in d["environment"]
    assert d["environment"]["threads"] == 1 and calls["threads"] == 1
    assert all(tuple(r) == B.RESULT_FIELDS for r in d["results"])
    by = {(r["runtime"], r["precision"], r["batch_size"]): r for r in d["results"]}
    assert len(by) == 5 * 2
    assert d["results"][0]["runtime"] == "torch-eager"  # the baseline comes first
    assert by[("torch-eager", "fp32", 1)]["speedup_vs_eager"] == pytest.approx(1.0)
    ort = by[("onnxruntime", "fp32", 2)]
    assert ort["error"] is None and ort["iters"] == 5 and ort["p50_ms"] > 0
    eager = by[("torch-eager", "fp32", 2)]
    assert ort["speedup_vs_eager"] == pytest.approx(eager["p50_ms"] / ort["p50_ms"])
    assert "cannot load" in by[("torchscript", "fp32", 1)]["error"]
    assert "device lost" in by[("pt2", "fp32", 1)]["error"]
    assert d["skipped"][0]["reason"] == "no CUDA GPU"


def test_bench_always_measures_eager_baseline(fake_layer):
    export_dir, calls = fake_layer
    rep = B.bench(export_dir, runtimes=["onnxruntime"], precisions=["int8"], warmup=0, iters=2)
    labels = [r.label for r in rep.results]
    assert labels == ["torch-eager/fp32/cpu", "onnxruntime/int8/cpu"]
    assert "torch-eager" in calls["names"]
    assert rep.results[1].speedup_vs_eager == pytest.approx(rep.results[0].p50_ms / rep.results[1].p50_ms)


def test_cli_writes_json_markdown_and_plot(fake_layer, tmp_path):
    export_dir, _ = fake_layer
    out_json, out_md, out_png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    r = CliRunner().invoke(cli, ["bench", str(export_dir), "--batch-sizes", "1,3", "--iters", "3",
                                 "--warmup", "1", "--json", str(out_json), "--markdown", str(out_md),
                                 "--plot", str(out_png)])
    assert r.exit_code == 0, r.output
    data = json.loads(out_json.read_text())
    assert sorted({x["batch_size"] for x in data["results"]}) == [1, 3]
    md = out_md.read_text()
    assert "| runtime | precision | device | batch |" in md
    assert md.count("\n| onnxruntime | int8 | cpu |") == 2
    assert "device lost" in md and "onnxruntime-cuda/fp32/cuda: no CUDA GPU" in md
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [ln for ln in r.output.splitlines() if ln.startswith("│")]  # the table: file, runtime, precision
    assert any("onnxruntime" in ln and "int8" in ln for ln in rows) and "speedup" in r.output, r.output
    assert not list(tmp_path.glob(".*.tmp-*"))  # atomic writes leave no temp files


@pytest.mark.parametrize("args, code, words", [
    (["--runtimes", "tensorflow"], 2, "unknown runtime"),
    (["--batch-sizes", "0"], 2, "batch size"),
    (["--batch-sizes", "-4"], 2, "batch size"),
    (["--batch-sizes", "one"], 2, "integers"),
    (["--iters", "3", "--duration", "1"], 2, "either --iters or --duration"),
    (["--iters", "0"], 2, "--iters"),
    (["--threads", "0"], 2, "--threads"),
    (["--precisions", "fp8"], 2, "unknown precision"),
    (["--device", "tpu"], 2, "unknown device"),
])
def test_cli_bad_options_exit_2_with_one_line(fake_layer, args, code, words):
    export_dir, _ = fake_layer
    r = CliRunner().invoke(cli, ["bench", str(export_dir), *args])
    assert r.exit_code == code, r.output
    assert words in r.output and "Traceback" not in r.output


def test_cli_cuda_without_gpu_is_a_clear_error(fake_layer):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = CliRunner().invoke(cli, ["bench", str(fake_layer[0]), "--device", "cuda"])
    assert r.exit_code == 1, r.output
    assert "needs a CUDA GPU" in r.output and "Traceback" not in r.output


def test_cli_export_folder_without_artifacts(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, words in ((tmp_path / "empty", "holds no exported model"), (tmp_path / "missing", "does not exist")):
        r = CliRunner().invoke(cli, ["bench", str(folder)])
        assert r.exit_code == 2, r.output  # bad usage, as in parity and predict (tests/test_policies.py)
        assert words in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1


# ---- real runtimes on a tiny export ----------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_export(fake_onnx_export):
    return fake_onnx_export  # shared with test_int8 and test_policies (conftest.py)


def test_cli_on_real_tiny_export(tiny_export, fake_run, tmp_path):
    out_json = tmp_path / "real.json"
    r = CliRunner().invoke(cli, ["bench", str(tiny_export), "--run-dir", str(fake_run), "--runtimes",
                                 "onnxruntime", "--precisions", "fp32", "--batch-sizes", "1,2",
                                 "--iters", "3", "--warmup", "1", "--threads", "1", "--json", str(out_json)])
    assert r.exit_code == 0, r.output
    results = json.loads(out_json.read_text())["results"]
    cells = {(x["runtime"], x["batch_size"]): x for x in results}
    assert set(cells) == {("torch-eager", 1), ("torch-eager", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    for cell in results:
        assert cell["error"] is None, cell
        assert cell["iters"] == 3 and 0 < cell["min_ms"] <= cell["p50_ms"] <= cell["p99_ms"]
    assert cells[("torch-eager", 1)]["speedup_vs_eager"] == pytest.approx(1.0)


def test_openvino_matches_onnxruntime(tiny_export):
    pytest.importorskip("openvino")
    import onnxruntime as ort

    from tlexport.formats.openvino.runtime import OpenVINORuntime

    x = np.random.default_rng(1).standard_normal((2, 3, 48, 48), dtype=np.float32)
    ov = OpenVINORuntime(tiny_export / "model.onnx", "fp32")
    ov.set_threads(1)
    got = ov.load().run(x)
    want = ort.InferenceSession(str(tiny_export / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    assert ov.label == "openvino/fp32/cpu" and ov.metadata and ov.metadata.get("classes")


def test_openvino_unavailable_cases(tmp_path):
    from tlexport.errors import RuntimeUnavailable
    from tlexport.formats.openvino.runtime import OpenVINORuntime

    with pytest.raises(RuntimeUnavailable, match="CPU only"):
        OpenVINORuntime(tmp_path / "model.onnx", "fp32", device="cuda").load()
    pytest.importorskip("openvino")
    with pytest.raises(RuntimeUnavailable, match="does not exist"):
        OpenVINORuntime(tmp_path / "model.onnx", "fp32").load()
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(RuntimeUnavailable, match="cannot compile"):
        OpenVINORuntime(tmp_path / "bad.onnx", "fp32").load()


# ---- the whole story: cold start, warm-up, memory, size, concurrency, competing load -------------
class SlowStart(FakeRuntime):
    """Loads for `load_s`, holds `mb` of memory, and its first `cold` calls take `cold_s`."""

    def __init__(self, *a, load_s=0.05, mb=64, cold=4, cold_s=0.03, **k):
        super().__init__(*a, **k)
        self.load_s, self.mb, self.cold, self.cold_s, self.buf = load_s, mb, cold, cold_s, None

    def load(self):
        import time

        time.sleep(self.load_s)
        self.buf = np.ones(self.mb * 2**20 // 8)  # touched pages: resident
        return self

    def run(self, batch):
        import time

        if len(self.seen) < self.cold:
            time.sleep(self.cold_s)
        return super().run(batch)

    def close(self):
        self.buf = None


@pytest.fixture
def slow_layer(monkeypatch, tmp_path):
    def discover(export_dir, **kw):
        return [SlowStart("torch-eager", "fp32", cold=2), SlowStart("onnxruntime", "int8", cold=2)], []

    fake = types.ModuleType("tlexport.runtimes")
    fake.discover = discover
    fake.RUNTIME_NAMES = ("torch-eager", "onnxruntime")
    monkeypatch.setitem(sys.modules, "tlexport.runtimes", fake)
    monkeypatch.setattr(tlexport, "runtimes", fake, raising=False)
    (tmp_path / "model.onnx").write_bytes(b"x")
    return tmp_path


def test_settled_compares_the_last_two_windows():
    assert not B.settled([1.0] * 9)  # fewer than two windows
    assert B.settled([1.0] * 10)
    assert not B.settled([5.0] * 5 + [1.0] * 5)
    assert B.settled([5.0] * 5 + [1.0] * 10)
    assert not B.settled([1.0] * 5 + [1.2] * 5) and B.settled([1.0] * 5 + [1.04] * 5)


def test_auto_warmup_outlasts_a_cold_start_and_is_bounded(monkeypatch):
    rt = SlowStart(cold=4, cold_s=0.03)
    r = B.time_runtime(rt, batch_size=1, warmup="auto", iters=5)
    assert r.error is None and r.first_call_ms >= 25  # the first call, timed alone
    assert r.warmup_calls >= 2 * B.WARMUP_WINDOW  # at least two windows to compare
    assert r.warmup_calls >= rt.cold + B.WARMUP_WINDOW or r.warmup_stable is False
    # the timed calls (the last `iters`) come after every slow one: counted, not timed (a busy
    # machine can make any call slow)
    assert len(rt.seen) - r.iters >= rt.cold
    monkeypatch.setattr(B, "settled", lambda times, *a, **k: False)  # latency never settles
    r = B.time_runtime(FakeRuntime(), batch_size=1, warmup="auto", iters=3)
    assert r.warmup_calls == B.WARMUP_MAX_CALLS and r.warmup_stable is False


def test_bench_records_load_first_call_memory_and_size(slow_layer):
    rep = B.bench(slow_layer, batch_sizes=(1, 2), warmup=0, iters=3)
    d = json.loads(json.dumps(rep.to_dict()))
    assert all(tuple(r) == B.RESULT_FIELDS for r in d["results"])
    for r in d["results"]:
        assert r["load_s"] >= 0.04 and r["concurrency"] == 1 and r["error"] is None
        assert r["competing_load"] is None or r["competing_load"] >= 0
    first = {(r["runtime"], r["batch_size"]): r["first_call_ms"] for r in d["results"]}
    assert first[("onnxruntime", 1)] >= 25 and first[("onnxruntime", 2)] < 25  # cold only once
    assert all(isinstance(r["peak_rss_mb"], float) and r["peak_rss_mb"] >= 0 for r in d["results"])
    assert "VmHWM" in d["environment"]["bench"]["memory"]
    assert set(d["environment"]["load_check"]) >= {"before_cores", "threshold_cores", "noisy"}
    md = rep.to_markdown()
    assert "first ms" in md and "peak MB" in md


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_rss_sees_what_a_stretch_of_work_holds():
    """PeakRss in a fresh interpreter (inside the test process, memory that other tests' threads
    free during the stretch can offset the peak): 64 MB touched after start() count, memory held
    before it does not."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from tlexport.measure import PeakRss\n"
            "before = np.ones(32 * 2**20 // 8)\n"
            "r = PeakRss().start()\n"
            "held = np.ones(64 * 2**20 // 8)\n"
            "print(r.peak_mb())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 60 <= float(out.stdout.strip()) < 90


def test_concurrency_runs_parallel_sessions(fake_layer):
    export_dir, _ = fake_layer
    rep = B.bench(export_dir, runtimes=["onnxruntime"], precisions=["fp32"], warmup=1, iters=4,
                  concurrency=(1, 3))
    cells = {(r.runtime, r.concurrency): r for r in rep.results}
    multi = cells[("onnxruntime", 3)]
    assert multi.error is None and multi.iters == 3 * 4  # every session made its calls
    assert multi.throughput > 0 and multi.p50_ms > 0 and multi.first_call_ms is not None
    assert multi.speedup_vs_eager is None and cells[("onnxruntime", 1)].speedup_vs_eager is not None
    r = CliRunner().invoke(cli, ["bench", str(export_dir), "--concurrency", "0"])
    assert r.exit_code == 2 and "--concurrency" in r.output


@pytest.fixture
def busy_neighbour():
    """A second process spinning on one core, as another user's job would: NOT a child of ours
    (the shell that starts it exits, so it is re-parented), since tlexport counts the processes it
    started as its own work, not as competing load. It stops by itself after 120 s at the latest."""
    import signal
    import subprocess
    import time

    spin = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass"
    shell = subprocess.run(["sh", "-c", f'"$0" -c "$1" >/dev/null 2>&1 & echo $!', sys.executable, spin],
                           capture_output=True, text=True, check=True)
    pid = int(shell.stdout.strip())
    time.sleep(0.3)
    try:
        yield pid
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="competing load is read from Linux /proc")
def test_competing_process_is_flagged_and_strict_refuses(busy_neighbour, fake_layer):
    from tlexport import measure

    load = measure.competing_load(0.5)
    assert load is not None and load > 0.6 and measure.is_noisy(load)
    export_dir, _ = fake_layer
    rep = B.bench(export_dir, runtimes=["onnxruntime"], precisions=["fp32"], warmup=0, duration=0.3)
    assert rep.noisy and rep.to_dict()["noisy"] is True
    assert all(r.noisy and r.competing_load > measure.NOISE_CORES for r in rep.results if r.error is None)
    assert "noisy" in rep.to_markdown()
    r = CliRunner().invoke(cli, ["bench", str(export_dir), "--strict", "--iters", "2"])
    assert r.exit_code == 1, r.output
    assert "--strict" in r.output and "Traceback" not in r.output
