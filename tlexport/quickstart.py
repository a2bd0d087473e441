"""`tlexport quickstart`: the whole pipeline on generated data, offline, in a few minutes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .synth import SHAPES, make_dataset


@dataclass
class QuickstartResult:
    out: Path
    data: Path
    weights: str  # "imagenet" or "none"
    train: object = None
    eval: object = None
    steps: dict = field(default_factory=dict)  # later stages: name -> result object


def pick_weights(arch: str) -> tuple[str, str]:
    """ImageNet weights when torchvision's cache already has them (never download here)."""
    from .models import hub_checkpoint_path

    cached = hub_checkpoint_path(arch)
    if cached.is_file():
        return "imagenet", f"fine-tuning from ImageNet weights ({cached})"
    return "none", f"ImageNet weights not cached ({cached} missing): training from scratch"


def quickstart(out: Path | str = "tlexport-quickstart", epochs: int = 6, per_class: int = 40,
               image_size: int = 64, progress=None) -> QuickstartResult:
    """Generate a small shapes dataset, fine-tune resnet18, evaluate, and run the later stages.

    Args:
        out: folder for the data, the run and its exports (must be empty or absent).
        progress: a tlexport.train.Progress for messages and epoch bars.
    Returns:
        QuickstartResult with every stage's result.
    """
    from .evaluate import evaluate
    from .train import Progress, TrainConfig, train

    progress = progress or Progress()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty; choose another --out")
    data = out / "data"
    progress.message(f"generating {per_class * 4} images of 4 shapes in {data}")
    make_dataset(data, classes=SHAPES[:4], per_class=per_class, size=96, seed=0)
    weights, note = pick_weights("resnet18")
    progress.message(note)
    cfg = TrainConfig(
        data=str(data), arch="resnet18", weights=weights, epochs=epochs, batch_size=16,
        optimizer="adamw", lr=1e-3 if weights == "none" else 5e-4, weight_decay=0.01,
        warmup_epochs=0.5, val_fraction=0.25, image_size=image_size, out=str(out / "run"),
    )
    result = QuickstartResult(out, data, weights)
    result.train = train(cfg, progress)
    result.eval = evaluate(result.train.run_dir)
    return result
