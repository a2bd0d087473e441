"""What a run directory holds between epochs: safetensors weights, the resumable checkpoint
(plain tensors, loads with weights_only=True), RNG state and metrics.csv. All written atomically."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import asdict, fields
from pathlib import Path

from ..fileio import write_bytes, write_text


def save_weights(model, path: Path, meta: dict) -> None:
    """best/last weights as safetensors (plain contiguous tensors, strict-loadable by torchvision)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes(path, save(state, metadata={k: json.dumps(v) for k, v in meta.items()}))


def save_checkpoint(path: Path, model, optimizer, scaler, scheduler, state: dict) -> None:
    """Everything needed to resume, as tensors and plain types (loads with weights_only=True)."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": list(random.getstate()[1]),
            "numpy": torch.from_numpy(np_state[1].astype("int64")),
            "numpy_pos": int(np_state[2]),
        },
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def restore_rng(rng: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(rng["torch"])
    restore_cuda_rng(rng.get("cuda") or [])
    random.setstate((3, tuple(rng["python"]), None))
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype("uint32"), rng["numpy_pos"], 0, 0.0))


def restore_cuda_rng(states: list) -> int:
    """Restore the per-GPU generators a checkpoint saved, for the GPUs this machine has: a run
    saved on 2 GPUs resumes on 1 (or on the CPU, where nothing is restored) instead of failing
    in set_rng_state_all. Returns how many generators were restored."""
    import torch

    if not states or not torch.cuda.is_available():
        return 0
    n = min(len(states), torch.cuda.device_count())
    for index in range(n):
        torch.cuda.set_rng_state(states[index], device=index)
    return n


def write_metrics(run_dir: Path, history: list) -> None:
    """metrics.csv: one row per finished epoch (EpochStats dataclasses)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(history[0])] if history else [])
    writer.writeheader()
    for row in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(row).items()})
    write_text(run_dir / "metrics.csv", buffer.getvalue())
