"""The traced-graph cache (`formats/onnx/graphcache.py`): a second export of the same weights and
settings skips torch's dynamo trace and writes the same file; anything the trace depends on
(weights, class code, shapes, opset) is a new entry; a broken entry, a full disk or
TLEXPORT_GRAPH_CACHE=off never fails an export; `tlexport cache` counts and clears the graphs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.formats.onnx import graph, graphcache


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder of this test's own (not the suite's shared graphs)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def traces(monkeypatch) -> list:
    """Every real trace this test makes."""
    seen = []
    real = graph._trace

    def spy(*args):
        seen.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(graph, "_trace", spy)
    return seen


def small(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


def export(module, path: Path, *, shape=(2, 3, 16, 16), opset=18, dynamic=True) -> bytes:
    import torch

    graph.export_onnx(module, torch.zeros(shape), path, opset=opset, dynamic=dynamic, meta=_meta())
    return path.read_bytes()


def _meta() -> dict:
    """Every metadata field ONNX files carry, with placeholder values."""
    from tlexport.formats.onnx.metadata import ONNX_KEYS, OPTIONAL
    from tlexport.models import default_preprocess

    meta = {field: "0" for field in ONNX_KEYS.values() if field not in OPTIONAL}
    return {**meta, "classes": ["a", "b", "c"], "preprocess": default_preprocess("resnet18").to_dict(), "batch": None}


def test_a_second_export_reads_the_graph_and_writes_the_same_file(own_cache, traces, tmp_path):
    from tlexport import progress as P

    said: list[list[str]] = [[], []]
    with P.listening(said[0].append):
        first = export(small(), tmp_path / "a.onnx")
    with P.listening(said[1].append):
        again = export(small(), tmp_path / "b.onnx")
    assert len(traces) == 1 and first == again
    assert "waiting for torch.onnx.export (dynamo)" in said[0] and "reading the traced graph from the cache" in said[1]
    assert not any("cache" in s for s in said[0]) and not any("dynamo" in s for s in said[1])
    assert [p.suffix for p in (own_cache / "graphs").glob("*.onnx")] == [".onnx"]


def test_whatever_the_trace_depends_on_is_a_new_entry(own_cache, traces, tmp_path):
    import torch

    export(small(), tmp_path / "base.onnx")
    export(small(seed=1), tmp_path / "weights.onnx")  # other weights
    export(small(), tmp_path / "shape.onnx", shape=(2, 3, 20, 20))
    export(small(), tmp_path / "fixed.onnx", dynamic=False)
    export(small(), tmp_path / "opset.onnx", opset=19)
    changed = small()
    changed[1] = torch.nn.ReLU6()  # another class, same state dict
    export(changed, tmp_path / "class.onnx")
    assert len(traces) == 6
    assert len(list((own_cache / "graphs").glob("*.onnx"))) == 6


def test_a_setting_the_forward_reads_is_part_of_the_key(own_cache, traces, tmp_path):
    """A wrapper's plain attribute (not a parameter, not in extra_repr) changes the graph."""
    import torch

    def scaled(factor):
        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner, self.factor = small(), factor

            def forward(self, x):
                return self.inner(x) * self.factor

        return Scaled().eval()

    assert export(scaled(2.0), tmp_path / "a.onnx") != export(scaled(3.0), tmp_path / "b.onnx")
    assert export(scaled(2.0), tmp_path / "c.onnx") == (tmp_path / "a.onnx").read_bytes()
    assert len(traces) == 2


def test_the_key_is_the_same_in_another_process(own_cache):
    import torch

    code = ("import torch, sys; sys.path.insert(0, %r)\n"
            "from test_graph_cache import small\n"
            "from tlexport.formats.onnx import graphcache\n"
            "from tlexport.exporters.job import dynamic_shapes\n"
            "print(graphcache.key(small(), torch.zeros(2, 3, 16, 16), opset=18, dynamic_shapes=dynamic_shapes(True, False)))"
            % str(Path(__file__).parent))
    from tlexport.exporters.job import dynamic_shapes

    here = graphcache.key(small(), torch.zeros(2, 3, 16, 16), opset=18, dynamic_shapes=dynamic_shapes(True, False))
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert there.returncode == 0, there.stderr
    assert there.stdout.split()[-1] == here


def test_a_broken_entry_is_traced_again_and_replaced(own_cache, traces, tmp_path):
    first = export(small(), tmp_path / "a.onnx")
    (entry,) = (own_cache / "graphs").glob("*.onnx")
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated
    assert export(small(), tmp_path / "b.onnx") == first
    assert len(traces) == 2 and entry.stat().st_size > 1000


def test_a_full_disk_keeps_no_entry_and_still_exports(own_cache, traces, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(graphcache.shutil, "disk_usage", lambda p: usage(10**12, 10**12, 10))
    assert export(small(), tmp_path / "a.onnx") == export(small(), tmp_path / "b.onnx")
    assert len(traces) == 2 and not list((own_cache / "graphs").glob("*.onnx"))


def test_a_cache_turned_off_is_neither_read_nor_written(own_cache, traces, tmp_path, monkeypatch):
    monkeypatch.setenv("TLEXPORT_GRAPH_CACHE", "off")
    export(small(), tmp_path / "a.onnx")
    export(small(), tmp_path / "b.onnx")
    assert len(traces) == 2 and not (own_cache / "graphs").exists()


def test_the_least_recently_used_entries_go_beyond_the_bound(own_cache, tmp_path, monkeypatch):
    import torch

    from tlexport.exporters.job import dynamic_shapes

    def entry(seed) -> Path:
        name = graphcache.key(small(seed), torch.zeros(2, 3, 16, 16), opset=18, dynamic_shapes=dynamic_shapes(True, False))
        return own_cache / "graphs" / f"{name}.onnx"

    monkeypatch.setattr(graphcache, "MAX_ENTRIES", 2)
    for seed in (0, 1):
        export(small(seed), tmp_path / f"{seed}.onnx")
        os.utime(entry(seed), (1000 + seed, 1000 + seed))  # 0 older than 1
    export(small(0), tmp_path / "again.onnx")  # read: 0 is now the most recently used
    export(small(2), tmp_path / "2.onnx")  # a third entry: the least recently used (1) goes
    assert sorted((own_cache / "graphs").glob("*.onnx")) == sorted([entry(0), entry(2)])


def test_cache_counts_and_clears_the_graphs(own_cache, tmp_path):
    export(small(), tmp_path / "a.onnx")
    info = json.loads(CliRunner().invoke(cli, ["cache", "--json"]).output)
    assert info["graph_files"] == 1 and info["graph_bytes"] > 0
    r = CliRunner().invoke(cli, ["cache", "--clear"])
    assert r.exit_code == 0 and "1 traced ONNX graphs" in r.output, r.output
    assert not (own_cache / "graphs").exists()
