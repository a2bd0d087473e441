"""What would break on the first GPU, guarded on a CPU: the GPU paths are forced (CUDA reported
as available, CUDA copies made on the CPU, fake parity rows) so each check runs without one.

- an fp16 TorchScript build leaves the shared fp32 weights bit-identical (the old builder
  rounded them with .half()/.float(), breaking every later export);
- fp32 TorchScript and .pt2 are built from CPU copies even with --device cuda, and the manifest
  says which devices each artifact targets; discovery skips a device an artifact does not target;
- verification keeps one row per device for each (file, precision) and fails when any fails;
- no runtime, bench, parity or the matmul ceiling leaves TF32 switched;
- "cuda:0" is CUDA wherever a device string is compared (runtimes, gpu_check), and synchronised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


# ---- a CUDA export on a machine without CUDA ------------------------------------------------
def _fake_cuda_export(fake_run: Path, out: Path, monkeypatch) -> dict:
    """`export(--device cuda)` of TorchScript fp32/fp16 and .pt2, with CUDA reported present and
    the CUDA copies made on the CPU. Returns what each builder was handed, in call order."""
    import torch

    from tlexport.exporters import pipeline
    from tlexport.exporters.job import Job
    from tlexport.formats.pt2 import build as pt2
    from tlexport.formats.torchscript import build as torchscript

    seen = {"model_on": [], "torchscript": [], "pt2": []}
    real_model_on, real_example_on = Job.model_on, Job.example_on

    def model_on(self, device, half=False):
        seen["model_on"].append((device, half))
        model = real_model_on(self, "cpu" if device == "cuda" else device, half)
        model._asked_device = device  # what the builder asked for, whatever it got here
        return model

    def example_on(self, device, half=False):
        return real_example_on(self, "cpu" if device == "cuda" else device, half)

    def spy(kind, real):
        def call(module, example, path, **kw):
            p = next(module.parameters())
            seen[kind].append({"asked": getattr(module, "_asked_device", p.device.type), "dtype": p.dtype,
                               "shared": module is job_model[0],
                               "state": {k: v.detach().clone() for k, v in module.state_dict().items()}})
            return real(module, example, path, **kw)
        return call

    job_model = [None]
    real_make_job = pipeline._make_job

    def make_job(*args, **kw):
        job = real_make_job(*args, **kw)
        job_model[0] = job.model
        return job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(Job, "model_on", model_on)
    monkeypatch.setattr(Job, "example_on", example_on)
    monkeypatch.setattr(pipeline, "_make_job", make_job)
    monkeypatch.setattr(torchscript, "export_torchscript", spy("torchscript", torchscript.export_torchscript))
    monkeypatch.setattr(pt2, "export_pt2", spy("pt2", pt2.export_pt2))
    result = pipeline.export(fake_run, formats=("torchscript", "pt2"), precisions=("fp32", "fp16"),
                             out=out, device="cuda", verify=False)
    seen["result"] = result
    return seen


@pytest.fixture(scope="module")
def cuda_export(fake_run, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        seen = _fake_cuda_export(fake_run, tmp_path_factory.mktemp("cuda_export") / "export", mp)
    return seen


def test_fp16_torchscript_leaves_the_shared_fp32_weights_bit_identical(cuda_export, fake_run):
    import torch
    from safetensors.torch import load_file

    trained = load_file(str(fake_run / "best.safetensors"))
    # .pt2 is built after fp16 TorchScript, from the shared model: it must see the trained weights
    # exactly (a .half()/.float() round trip moves most of them by up to 1e-3 relative).
    (pt2_call,) = cuda_export["pt2"]
    assert pt2_call["shared"] and pt2_call["dtype"] == torch.float32
    for name, tensor in trained.items():
        assert torch.equal(pt2_call["state"][name], tensor), name
    fp16_calls = [c for c in cuda_export["torchscript"] if c["dtype"] == torch.float16]
    assert len(fp16_calls) == 1 and not fp16_calls[0]["shared"]  # a private copy was halved


def test_cuda_export_builds_fp32_on_the_cpu_and_records_devices(cuda_export):
    import torch

    ts = {c["dtype"]: c["asked"] for c in cuda_export["torchscript"]}
    assert ts == {torch.float32: "cpu", torch.float16: "cuda"}  # fp16 has no CPU conv kernels
    assert cuda_export["pt2"][0]["asked"] == "cpu"
    out = cuda_export["result"].out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    devices = {a["file"]: a["devices"] for a in manifest["artifacts"]}
    assert devices == {"model.ts": ["cpu", "cuda"], "model.fp16.ts": ["cuda"], "model.pt2": ["cpu", "cuda"]}
    assert manifest["device"] == "cuda"


def test_fp32_artifacts_of_a_cuda_export_load_and_agree_on_the_cpu(cuda_export, fake_run):
    import numpy as np
    import torch

    from tlexport.models import load_run

    out = cuda_export["result"].out_dir
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 3, 48, 48)).astype(np.float32))
    with torch.inference_mode():
        want = load_run(fake_run).load_model().eval()(x)
        ts = torch.jit.load(str(out / "model.ts"))
        program = torch.export.load(str(out / "model.pt2")).module()
        assert {p.device.type for p in program.parameters()} == {"cpu"}
        for got in (ts(x), program(x)):
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_discover_skips_a_device_the_artifact_does_not_target(tmp_path):
    from tlexport.runtimes import discover

    (tmp_path / "model.ts").write_bytes(b"not loaded: discovery only reads the manifest")
    manifest = {"artifacts": [{"file": "model.ts", "format": "torchscript", "precision": "fp32",
                               "role": "model", "devices": ["cuda"]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    found, skipped = discover(tmp_path, names=["torchscript"], devices=("cpu",), trust_code=True)
    assert found == []
    assert [(s.name, s.device) for s in skipped] == [("torchscript", "cpu")]
    assert "targets cuda only" in skipped[0].reason


# ---- verification over every device -----------------------------------------------------------
def _verify_with_rows(tmp_path, monkeypatch, cpu_passes: bool, cuda_passes: bool):
    """Run export's verification of one fp32 model.ts on a fake parity report."""
    from tlexport.exporters import verification
    from tlexport.exporters.job import Artifact
    from tlexport.verify import parity as parity_mod
    from tlexport.verify.compare import RuntimeResult

    asked = {}

    def row(device, passed):
        return RuntimeResult("torchscript", "fp32", device, max_abs=1e-6 if passed else 0.5, mean_abs=0.0,
                             top1_agreement=100.0 if passed else 75.0, passed=passed,
                             failures=[] if passed else [f"logits outside atol on {device}"],
                             artifact=str(tmp_path / "model.ts"))

    def fake_parity(folder, **kw):
        asked.update(kw)
        rows = [row("cpu", cpu_passes), row("cuda", cuda_passes)]
        return parity_mod.ParityReport(all(r.passed for r in rows), "torch-eager", 8, rows, source="8 images")

    monkeypatch.setattr(parity_mod, "parity", fake_parity)
    from tlexport.exporters import int8 as int8_mod

    # the gate's images (the run's val split) are handed to parity, which is faked here
    monkeypatch.setattr(int8_mod, "held_out", lambda run: None)
    art = Artifact("model.ts", "torchscript", "fp32", devices=["cpu", "cuda"])
    run = SimpleNamespace(dir=tmp_path)
    return art, asked, lambda: verification.verify([art], tmp_path, run, "cuda")


def test_verification_fails_when_one_device_fails(tmp_path, monkeypatch):
    """A file that misses its gate on one device is not verified (export then drops it and lists
    it as failed, with this reason), whatever the other device said."""
    art, asked, verify = _verify_with_rows(tmp_path, monkeypatch, cpu_passes=False, cuda_passes=True)
    verify()
    assert tuple(asked["devices"]) == ("cpu", "cuda")
    assert art.verified is False and art.verification["devices"] == ["cpu", "cuda"]
    assert "logits outside atol on cpu" in art.verification["reason"], art.verification


def test_verification_records_every_device_it_passed_on(tmp_path, monkeypatch):
    art, _, verify = _verify_with_rows(tmp_path, monkeypatch, cpu_passes=True, cuda_passes=True)
    verify()
    assert art.verified is True
    assert art.verification["devices"] == ["cpu", "cuda"]


# ---- TF32 is never switched process-wide --------------------------------------------------------
@pytest.fixture
def tf32_sentinel():
    """Both TF32 flags set to True (matmul's default is False): whatever switches them shows."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("name", ["torch-eager", "torchscript", "pt2"])
def test_loading_a_cuda_runtime_leaves_tf32_alone(name, tf32_sentinel, fake_run, tmp_path, monkeypatch):
    import torch

    from tlexport.runtimes import runtime_class

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    artifact = None
    if name != "torch-eager":
        artifact = tmp_path / ("model.ts" if name == "torchscript" else "model.pt2")
        artifact.write_bytes(b"the load fails after the runtime's torch set-up")
    runtime = runtime_class(name)(artifact, "fp32", "cuda", run_dir=fake_run)
    with pytest.raises(Exception):  # no GPU here: loading stops, but only after the set-up
        runtime.load()
    assert tf32_sentinel() == (True, True)


def test_bench_and_parity_leave_tf32_alone(cuda_export, tf32_sentinel):
    from tlexport.benchmark import bench
    from tlexport.verify.parity import parity

    out = cuda_export["result"].out_dir
    rep = bench(out, runtimes=["torchscript"], devices=("cpu",), batch_sizes=(1,), warmup=1, iters=2,
                trust_code=True)
    assert any(r.error is None and r.runtime == "torchscript" for r in rep.results)
    assert tf32_sentinel() == (True, True)
    report = parity(out, runtimes=["torchscript"], devices=("cpu",), max_images=4, trust_code=True)
    assert report.passed, report.to_dict()
    assert tf32_sentinel() == (True, True)


def test_matmul_ceiling_restores_tf32(tf32_sentinel, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import matmul_ceiling
    import torch

    seen = []

    def timed(torch_module, *args):  # what the timing sees, not how fast it is (a busy machine rounds to 0)
        seen.append(torch_module.backends.cuda.matmul.allow_tf32)
        if len(seen) == 2:
            raise RuntimeError("a failing timing restores the switch too")
        return {"kernel": "stub"}

    monkeypatch.setattr(matmul_ceiling, "_time_mm", timed)
    assert matmul_ceiling.torch_mm(n=32, reps=1) == {"kernel": "stub"}  # the only path touching TF32
    assert tf32_sentinel() == (True, True)
    with pytest.raises(RuntimeError):
        matmul_ceiling.torch_mm(n=32, reps=1)
    assert seen == [False, False]  # off while timing, for a true fp32 number
    assert tf32_sentinel() == (True, True) and torch.backends.cuda.matmul.allow_tf32


# ---- "cuda:0" is CUDA -------------------------------------------------------------------------
@pytest.fixture
def one_fake_gpu(monkeypatch):
    """CUDA reported present with one device; synchronize() calls are counted."""
    import torch

    syncs = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    return syncs


def test_resolve_device_indexes(one_fake_gpu):
    import torch

    from tlexport.errors import RuntimeUnavailable, UsageError
    from tlexport.training.torchutil import resolve_device

    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(RuntimeUnavailable, match="only 1 GPU"):
        resolve_device("cuda:1")
    with pytest.raises(UsageError, match="cuda:N"):
        resolve_device("cuda:x")  # not silently GPU 0


def test_torch_runtime_on_cuda_index_synchronises(one_fake_gpu):
    from tlexport.runtimes import runtime_class

    runtime_class("torch-eager")(None, "fp32", "cuda:0").synchronize()
    assert len(one_fake_gpu) == 1


def _gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    return gpu_check


def test_gpu_check_treats_cuda_index_as_cuda_and_synchronises(one_fake_gpu, monkeypatch):
    gc = _gpu_check(monkeypatch)
    assert gc.is_cuda("cuda:0") and gc.is_cuda("cuda") and not gc.is_cuda("cpu")
    gc.sync("cuda:0")
    gc.sync("cpu")
    assert len(one_fake_gpu) == 1


def test_gpu_check_summary_shows_reasons_not_none(monkeypatch):
    gc = _gpu_check(monkeypatch)
    results = {
        "parity": {"status": "ok", "passed": True, "results": [
            {"runtime": "onnxruntime-cuda", "precision": "fp32", "device": "cuda", "max_abs": None,
             "top1_agreement": None, "passed": None, "skipped_reason": "onnxruntime has no CUDA provider here"},
            {"runtime": "torchscript", "precision": "fp32", "device": "cuda", "max_abs": 2e-6,
             "top1_agreement": 100.0, "passed": True, "skipped_reason": None}]},
        "ddp": {"status": "skipped", "reason": "one GPU visible; DDP needs two or more"},
    }
    text = gc.summary_markdown(results, {})
    assert "onnxruntime has no CUDA provider here" in text
    assert "one GPU visible; DDP needs two or more" in text
    assert "None" not in text


def test_gpu_check_times_steps_after_the_warm_up(monkeypatch):
    import time

    gc = _gpu_check(monkeypatch)
    calls = []

    def step():  # the first calls are slow, as autotuning and worker start-up make them
        calls.append(1)
        if len(calls) <= 3:
            time.sleep(0.2)

    r = gc.timed_steps(step, "cpu", per_step=8, warmup=3, min_steps=20, min_seconds=0.0, max_seconds=30.0)
    assert r["warmup_steps"] == 3 and r["steps"] == 20 and len(calls) == 23
    assert r["warmup_s"] >= 0.6 and r["median_step_ms"] < 50  # the slow calls are not in the timing
    assert r["images_per_s"] > 8 / 0.05  # 8 images a step, none of the 0.2 s steps counted


def test_gpu_check_stops_a_section_at_its_limit_and_keeps_the_record(monkeypatch, tmp_path):
    import argparse

    gc = _gpu_check(monkeypatch)
    args = argparse.Namespace(budget=600.0, only=None)
    runner = gc.Runner(args, gc.Ctx("cpu", True, tmp_path / "work", tmp_path))
    (tmp_path / "work").mkdir()
    runner.results["env"] = runner.spawn("env", 0.3)  # env imports torch: far longer than 0.3 s
    runner.save(final=True)
    assert runner.results["env"]["status"] == "timeout"
    assert runner.exit_code() == 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["env"]["status"] == "timeout" and saved["_meta"]["exit_code"] == 1
    assert "stopped at its" in (tmp_path / "summary.md").read_text()


def test_torchscript_export_parity_and_bench_need_no_onnx_or_plotting(fake_run, tmp_path, monkeypatch):
    """The GPU machine may lack onnx, onnxscript and matplotlib: the torch formats still export
    (manifest included), verify, compare and time."""
    from tlexport.benchmark import bench
    from tlexport.exporters.pipeline import export
    from tlexport.verify.parity import parity

    for name in ("onnx", "onnxscript", "matplotlib"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    res = export(fake_run, formats=("torchscript",), precisions=("fp32",), out=tmp_path / "x")
    assert res.manifest["verification"]["passed"] is True
    assert res.manifest["versions"]["onnx"] is None
    assert parity(res.out_dir, runtimes=["torchscript"], max_images=4, trust_code=True).passed
    rep = bench(res.out_dir, runtimes=["torchscript"], batch_sizes=(1,), warmup=1, iters=2, trust_code=True)
    assert "torchscript" in rep.to_markdown()
