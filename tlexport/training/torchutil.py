"""Torch helpers shared by training and evaluation: the device, mixed precision, moving batches,
the classifier head of a registered architecture, and logits over a loader."""

from __future__ import annotations

import functools
import time

from ..errors import RuntimeUnavailable, UsageError
from ..tables import archs
from .config import PRECISIONS


def resolve_device(spec: str):
    """auto | cpu | cuda | cuda:N -> torch.device, with a clear error when CUDA is absent."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise UsageError(f"unknown --device {spec!r}; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise RuntimeUnavailable(f"--device {spec}: no CUDA GPU is available here; use --device cpu")
        index = int(index_text) if index_text else 0
        if index >= torch.cuda.device_count():
            raise RuntimeUnavailable(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    raise UsageError(f"unknown --device {spec!r}; use auto, cpu, cuda or cuda:N")


def amp_dtype(device):
    """Mixed precision on CUDA: bf16 where the GPU has it (no scaler needed), else fp16."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_bf16() -> bool:
    """The CPU computes in bf16 natively (AVX-512 BF16 or AMX): only there can autocast pay off."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch: read the flags the kernel reports
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def bf16_probe() -> tuple[bool, float]:
    """Whether bf16 autocast trains a small convolution block faster than fp32 on this CPU, and
    the fp32/bf16 time ratio. Cached per process; 10 small steps, about 0.2 s on an idle core.

    The two precisions alternate step by step in one measurement, so a neighbour's load falls on
    both alike (on a shared machine two separate timings compare two different loads). Faster
    means a median step at least 15% faster: a tie keeps the exact fp32 path.
    """
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                              torch.nn.Conv2d(64, 64, 3, padding=1)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 64, 28, 28).contiguous(memory_format=torch.channels_last)

    def step(dtype):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = net(x)
        out.float().mean().backward()
        return time.perf_counter() - start

    times = {None: [], torch.bfloat16: []}
    for i in range(5):
        for dtype in ((None, torch.bfloat16) if i % 2 else (torch.bfloat16, None)):
            t = step(dtype)
            if i:  # the first round warms up both (oneDNN builds its kernels)
                times[dtype].append(t)
    # each round's ratio compares two adjacent steps; the median drops a round a neighbour spoiled
    ratios = sorted(a / b for a, b in zip(times[None], times[torch.bfloat16]))
    ratio = (ratios[1] + ratios[2]) / 2
    return ratio >= 1.15, round(ratio, 2)


def resolve_precision(device, precision: str = "auto"):
    """--precision -> (autocast dtype or None, why). CUDA: auto keeps AMP (see amp_dtype). CPU:
    auto uses bf16 only on a CPU with native bf16 where bf16_probe measures it faster."""
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None, "--precision fp32"
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeUnavailable("--precision bf16: this GPU has no bf16; use auto (fp16 AMP) or fp32")
        return (torch.bfloat16, "--precision bf16") if precision == "bf16" else (amp_dtype(device), "CUDA AMP")
    if precision == "bf16":
        return torch.bfloat16, "--precision bf16"
    if not cpu_has_bf16():
        return None, "the CPU has no AVX-512 BF16 or AMX"
    with torch.random.fork_rng(devices=[]):  # the probe's random tensors leave the run's RNG alone
        faster, ratio = bf16_probe()
    if not faster:
        return None, f"bf16 probe: {ratio}x of fp32 speed, not faster here"
    return torch.bfloat16, f"bf16 probe: {ratio}x faster than fp32"


def to_device(batch, device):
    """(images, labels) on `device`, images channels-last (what the convolutions run fastest on)."""
    import torch

    x, y = batch
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


# ---- the classifier head ------------------------------------------------------------------------
def head_parameters(model, arch: str) -> list:
    """The parameters of the replaced classifier layer (they always learn at the full LR)."""
    return list(model.get_submodule(archs.get(arch).head).parameters())


def set_backbone_frozen(model, arch: str, frozen: bool) -> None:
    """Freeze or unfreeze everything but the head. A frozen body also keeps its BatchNorm statistics
    (see set_train_mode)."""
    prefix = archs.get(arch).head_prefix
    for name, p in model.named_parameters():
        if not name.startswith(prefix):
            p.requires_grad_(not frozen)


def set_train_mode(model, arch: str, frozen: bool) -> None:
    """Training mode; with a frozen body only the head's top-level block trains: its dropout is
    active (mobilenet_v3's `classifier` is Linear, Hardswish, Dropout, then the head), while a
    BatchNorm of the body that sits in that block too keeps its running statistics."""
    import torch

    model.train()
    if not frozen:
        return
    head = archs.get(arch).head
    model.eval()
    block_name = head.split(".")[0]
    block = model.get_submodule(block_name)
    block.train()
    for name, module in block.named_modules(prefix=block_name):
        inside_head = name == head or name.startswith(head + ".")
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and not inside_head:
            module.eval()


def predict_logits(model, loader, device, dtype=None):
    """Logits and labels over a loader, in eval mode, as float32 CPU tensors."""
    import torch

    model.eval()
    outs, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            if batch is None:
                continue
            x, y = to_device(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs.append(model(x).float().cpu())
            labels.append(y.cpu())
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)
