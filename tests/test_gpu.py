"""CUDA-only tests (marked `gpu`, skipped without a GPU; benchmarks/gpu_check.sh runs them on a
lent machine): a mixed-precision training step, parity of a `--device cuda` export on CUDA, and
one bench cell on CUDA."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_amp_training_step_learns_on_cuda(accumulate):
    from tlexport import models
    from tlexport.training.engine import Engine
    from tlexport.training.torchutil import amp_dtype, resolve_device

    dev = resolve_device("cuda:0")
    dtype = amp_dtype(dev)
    assert dtype in (torch.bfloat16, torch.float16)
    torch.manual_seed(0)
    model = models.create("resnet18", 3).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    x = torch.randn(8, 3, 64, 64, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8, device=dev) % 3
    engine = Engine(opt, torch.nn.CrossEntropyLoss(), scaler=scaler, dtype=dtype, accumulate=accumulate)
    group = [(x[i::accumulate], y[i::accumulate]) for i in range(accumulate)]  # micro-batches of the same 8 images
    out_dtypes = []
    model.register_forward_hook(lambda module, inputs, output: out_dtypes.append(output.dtype))
    losses = []
    for _ in range(12):  # one fixed batch: a working step drives its loss down
        totals = engine.step(model, group)
        losses.append(totals.loss_sum / totals.images)
    assert out_dtypes and set(out_dtypes) == {dtype}  # the forward pass ran under autocast
    assert len(out_dtypes) == 12 * accumulate
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cuda_export_verifies_on_both_devices_and_passes_parity_on_cuda(fake_run, tmp_path):
    from tlexport.exporters.pipeline import export
    from tlexport.verify.parity import parity

    res = export(fake_run, formats=("torchscript", "pt2"), precisions=("fp32", "fp16"), out=tmp_path / "x",
                 device="cuda")
    manifest = json.loads((res.out_dir / "manifest.json").read_text())
    verified_on = {a["file"]: a["verification"]["devices"] for a in manifest["artifacts"]}
    assert verified_on == {"model.ts": ["cpu", "cuda"], "model.fp16.ts": ["cuda"], "model.pt2": ["cpu", "cuda"]}
    report = parity(res.out_dir, devices=("cuda",), max_images=8, trust_code=True)
    compared = {(r.runtime, r.precision) for r in report.compared}
    assert {("torchscript", "fp32"), ("torchscript", "fp16"), ("pt2", "fp32")} <= compared
    assert report.passed, report.to_dict()


def test_bench_cell_on_cuda_is_timed_with_sync(fake_run, monkeypatch):
    from tlexport.benchmark import time_runtime
    from tlexport.runtimes import reference_runtime

    syncs = []
    real_sync = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (syncs.append(1), real_sync(*a)))
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with reference_runtime(fake_run, device="cuda") as rt:
        cell = time_runtime(rt, 4, warmup=2, iters=5, image_size=48)
    assert cell.error is None and cell.iters == 5 and cell.device == "cuda"
    assert 0 < cell.min_ms <= cell.p50_ms <= cell.p99_ms
    assert len(syncs) >= 5  # every timed call waited for the GPU
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32
