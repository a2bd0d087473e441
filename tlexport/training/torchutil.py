"""Torch helpers shared by training and evaluation: the device, mixed precision, moving batches,
the classifier head of a registered architecture, and logits over a loader."""

from __future__ import annotations

from ..errors import RuntimeUnavailable, UsageError
from ..spec import archs


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
