"""Shared fixtures: tiny generated images and a tiny run directory (resnet18, 48 px crop)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# One OpenMP thread per test process: the suite runs one pytest-xdist worker per core (README:
# `-n auto`), and a process whose OpenMP threads outnumber its share of the cores waits at every
# barrier for a thread the OS has set aside (the quickstart test beside one busy process: 225 s
# with 2 threads, 81 s with 1). Set by the controller, inherited by the workers and their children.
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent


SWEEP_COMMAND = "python -m pytest -m sweep"
_SWEEP_LEFT = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    _leave_out_sweeps(config, items)
    if "PYTEST_XDIST_WORKER" in os.environ:
        _longest_first(items)
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: the controller prints the summary line
        config.workeroutput["sweep_left"] = config.stash.get(_SWEEP_LEFT, 0)


def _leave_out_sweeps(config, items):
    """`sweep` tests (every tested architecture, minutes each on 2 cores) run only when `-m` names
    the marker (`python -m pytest -m sweep`, or `-m "sweep or not sweep"` for everything); any other
    run leaves them out as deselected, and says so at the end. A test named by its node id
    (`tests/test_archs.py::test_x[arch]`) runs: it was asked for."""
    if "sweep" in (config.option.markexpr or ""):
        return
    named = tuple(arg for arg in config.args if "::" in arg)
    left = [item for item in items if item.get_closest_marker("sweep") and not item.nodeid.startswith(named or ("\0",))]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [item for item in items if item not in left]
    config.stash[_SWEEP_LEFT] = len(left)


def pytest_testnodedown(node, error):
    """pytest-xdist's controller collects nothing itself: each worker tells it what it left out."""
    left = getattr(node, "workeroutput", {}).get("sweep_left", 0)
    node.config.stash[_SWEEP_LEFT] = max(left, node.config.stash.get(_SWEEP_LEFT, 0))


def pytest_terminal_summary(terminalreporter, config):
    left = config.stash.get(_SWEEP_LEFT, 0)
    if left:
        terminalreporter.write_line(f"{left} sweep tests were left out (per-architecture sweeps): {SWEEP_COMMAND} runs them")


# ---- pytest-xdist: which worker runs what ---------------------------------------------------------
# Tests run by module (module fixtures are made once). Some modules run in one worker, one after
# the other (the controller sees only test ids, so they are named here):
RUN_TOGETHER = {
    # they read one shared session export, made once per run instead of once per worker
    # (collection fails when another module reads it without being named here)
    "edge_export_run": ("tests/test_edge.py", "tests/test_terminal.py"),
}
# The groups that take longest on 2 cores (about a minute or more each), started first so the
# workers end together: a long group picked up last would run alone at the end.
LONGEST_FIRST = ("tests/test_quickstart.py", "edge_export_run", "tests/test_web.py", "tests/test_archs.py",
                 "tests/test_remote.py", "tests/test_reliability.py", "tests/test_engine.py", "tests/test_compat.py",
                 "tests/test_fixed_batch_calibration.py", "tests/test_faults.py", "tests/test_int8.py",
                 "tests/test_partial_export.py", "tests/test_distributed.py", "tests/test_signals.py")


def _group(nodeid: str) -> str:
    """The scheduling group of a test: its module, or the RUN_TOGETHER group that names it."""
    module = nodeid.split("::", 1)[0]
    return next((name for name, modules in RUN_TOGETHER.items() if module in modules), module)


def _longest_first(items) -> None:
    """Order the collection by group (LONGEST_FIRST's order, then as collected), each group's tests
    in their own order: the controller hands out groups in this order. Every worker collects the
    same way, so they agree (pytest-xdist checks)."""
    for item in items:
        for name in RUN_TOGETHER:  # each group is named after the session export its modules share
            if name in getattr(item, "fixturenames", ()) and _group(item.nodeid) != name:
                raise pytest.UsageError(f"{item.nodeid} reads {name}: name its module in conftest's "
                                        "RUN_TOGETHER, or the export is made again in another worker")
    first: dict[str, int] = {}
    for item in items:
        first.setdefault(_group(item.nodeid), len(first))

    def rank(group: str) -> tuple[int, int]:
        return (LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST), first[group])

    items.sort(key=lambda item: rank(_group(item.nodeid)))


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Tests see output as wide as a line needs unless they name a width (test_terminal.py does):
    where a message wraps must depend neither on the terminal pytest runs in (a pytest-xdist worker
    has none: 80 columns) nor on how long the test's temporary folder is (a worker's is longer).
    pytest's own lines keep the terminal's width, fixed before COLUMNS changes."""
    try:
        writer = config.get_terminal_writer()
        writer.fullwidth = writer.fullwidth
    except (AttributeError, AssertionError):  # no terminal plugin (-p no:terminal)
        pass
    os.environ["COLUMNS"] = "500"
    _own_session(config)


def _own_session(config):
    """A pytest-xdist worker starts a session of its own: where Linux groups the scheduler by
    session (autogroup, on by default), the two workers then share the cores evenly, however many
    threads their tests start (measured: a one-thread process beside six busy ones ran 3.9 times
    faster when they were in another session)."""
    if hasattr(config, "workerinput") and hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:  # already a session or group leader: leave it as it is
            pass


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (pyproject's addopts), by module but with the shared-export modules as one
    group, in the collection's order (`_longest_first`)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    config.option.loadscopereorder = False
    return ByGroup(config, log)


@pytest.fixture(scope="session", autouse=True)
def _children_start_with_default_signals():
    """The signal tests send SIGINT and SIGHUP to tlexport processes as a terminal does. A suite
    started with them ignored (nohup, `cmd &` in a script, some CI runners) would hand that on to
    every child, which then rightly keeps ignoring them (Python installs no KeyboardInterrupt
    handler, tlexport leaves an ignored SIGHUP alone): such tests then wait for an exit that never
    comes. An ignored signal becomes a Python handler that does nothing: pytest itself still
    ignores it, and a child starts with the default (handlers do not survive exec)."""
    import signal

    saved = {}
    for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if s is not None and signal.getsignal(s) == signal.SIG_IGN:
            saved[s] = signal.signal(s, _ignore)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _ignore(signum, frame) -> None:
    """A no-op handler: the signal is ignored here and not inherited as ignored."""


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory):
    """tlexport's cache folder (remembered scans, training images, traced graphs) for the session
    fixtures, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("tlexport-cache")
        mp.setenv("TLEXPORT_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch, _session_cache_dir):
    """Each test starts with a cache folder of its own (beside tmp_path, which tests use as a data
    folder), empty but for the traced ONNX graphs: those are shared by the whole session (linked
    in, and what a test traced linked back), so each distinct graph is traced once, as a user's
    second export of the same run skips the trace (`formats/onnx/graphcache.py`)."""
    cache = tmp_path_factory.mktemp("tlexport-cache")
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(cache))
    pool = _session_cache_dir / "graphs"
    _link_graphs(pool, cache / "graphs")
    yield cache
    _link_graphs(cache / "graphs", pool)


def _link_graphs(src: Path, dst: Path) -> None:
    """Hard-link the graph entries of `src` that `dst` lacks (a marked folder made when needed)."""
    from tlexport.data.cache import marked_dir

    entries = [p for p in src.glob("*.onnx")] if src.is_dir() else []
    if not entries:
        return
    try:
        marked_dir(dst)
    except (OSError, ValueError):  # a test made the name something else: nothing to share
        return
    for p in entries:
        if not (dst / p.name).exists():
            try:
                os.link(p, dst / p.name)
            except OSError:
                pass


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x (12 train + 4 val) PNG images of 48 px in train/ and val/ folders."""
    from tlexport.data.synth import make_dataset

    root = tmp_path_factory.mktemp("data")
    return make_dataset(root, classes=("circle", "square", "triangle"), per_class=12,
                        val_per_class=4, size=48, split=True)


def write_fake_run(run_dir: Path, data_root: Path, classes, crop: int = 48, seed: int = 0,
                   arch: str = "resnet18", state: dict | None = None) -> Path:
    """A run directory as `tlexport train` writes it, with random (untrained) weights, or `state`:
    enough for export/parity/bench tests without paying for training."""
    import torch
    from safetensors.torch import save_file

    from tlexport import models
    from tlexport.data.folders import scan

    torch.manual_seed(seed)
    if state is None:
        state = models.create(arch, len(classes), image_size=crop).eval().state_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(run_dir / "best.safetensors"))
    save_file(state, str(run_dir / "last.safetensors"))
    pre = models.default_preprocess(arch).with_crop(crop)
    scanned = scan(data_root)
    (run_dir / "split.json").write_text(json.dumps(scanned.split_record()))
    meta = {
        "tlexport_version": "0.1.0", "arch": arch, "classes": list(classes),
        "preprocess": pre.to_dict(), "weights": {"source": "none", "file": None},
        "metrics": {"best_val_accuracy": 0.0, "best_epoch": 0}, "versions": {},
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory, tiny_data) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("runs") / "fake", tiny_data,
                          ["circle", "square", "triangle"])


@pytest.fixture(scope="session")
def fake_onnx_export(fake_run, tmp_path_factory) -> Path:
    """The fake run's fp32 ONNX alone (export's library call, unverified), made once per session
    for every test that only reads it (bench, int8 quantization, the JSON policies)."""
    from tlexport.exporters.pipeline import export

    out = tmp_path_factory.mktemp("onnx_fp32") / "export"
    export(fake_run, formats=("onnx",), precisions=("fp32",), out=out, verify=False)
    return out


# What the shared edge export makes (test_edge.py checks it; test_relative_paths.py exports every
# other format the same way; test_terminal.py reads its output and status lines).
EDGE_FORMATS = ("onnx", "executorch", "tflite", "ort", "triton")
# Calibration images of its int8 files: odd, so LiteRT's dynamic export (converted at batch 2)
# gets a short last batch, which used to fail the program's shape guard (#22.2).
EDGE_CALIB = 35


@dataclass
class EdgeExport:
    folder: Path  # the export folder
    stdout: str  # the command's --json report, alone
    stderr: str
    statuses: list  # every status line its progress display was given (tests/status_spy.py)


@pytest.fixture(scope="session")
def edge_export_run(fake_run, tmp_path_factory) -> EdgeExport:
    """Every edge format (and ONNX, which ORT and Triton start from), fp32 and int8, once: typed as
    README writes commands, from another working folder with relative paths (the run copied to
    runs/r there), in a real process (the converters' C++ writes to the file descriptors) with
    its own empty cache, so every graph is traced as on a first export."""
    import shutil
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("edge_work")
    shutil.copytree(fake_run, work / "runs" / "r")
    spy = work / "statuses.txt"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "COLUMNS": "100", "TLEXPORT_STATUS_SPY": str(spy),
           "TLEXPORT_CACHE_DIR": str(tmp_path_factory.mktemp("edge_cache"))}
    args = ["export", "runs/r", "--out", "runs/r/export", "--json", "--calib-size", str(EDGE_CALIB),
            "--format", ",".join(EDGE_FORMATS), "--precision", "fp32,int8"]
    p = subprocess.run([sys.executable, str(HERE / "status_spy.py"), *args], cwd=work, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    statuses = spy.read_text(encoding="utf-8").splitlines() if spy.exists() else []
    return EdgeExport(work / "runs" / "r" / "export", p.stdout, p.stderr, statuses)


def predict_in_fresh_process(model, images, top_k: int = 5) -> dict:
    """`tlexport.inference.predict` in a new interpreter, as an edge app runs it: {"torch": whether
    torch got imported, "n": images classified, "top": first image's top-k, "labels": every
    image's top-1 label}."""
    import subprocess
    import sys

    code = ("import sys, json\n"
            "from tlexport.inference import predict\n"
            f"r = predict({str(model)!r}, [{str(images)!r}], top_k={top_k})\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'n': len(r.results), 'top': r.results[0]['top'],"
            " 'labels': [x['top'][0]['label'] for x in r.results]}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
