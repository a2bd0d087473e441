"""`tlexport quickstart` (the library side): the whole pipeline on generated data, offline, in a
few minutes."""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from .data.synth import SHAPES, make_dataset
from .errors import UsageError
from .run import made_dirs


@dataclass
class QuickstartResult:
    out: Path
    data: Path
    weights: str  # "imagenet" or "none"
    train: object = None
    eval: object = None
    steps: dict = field(default_factory=dict)  # later stages: name -> result object

    def train_samples_for_predict(self, n: int = 4):
        """One val image of each of the first `n` classes: what predict is shown on."""
        from .models import load_run

        seen, picked = set(), []
        for path, label in load_run(self.train.run_dir).samples("val"):
            if label not in seen and len(picked) < n:
                seen.add(label)
                picked.append((path, label))
        return picked


def pick_weights(arch: str) -> tuple[str, str]:
    """ImageNet weights when torchvision's cache already has them (never download here)."""
    from .models import hub_checkpoint_path

    cached = hub_checkpoint_path(arch)
    if cached.is_file():
        return "imagenet", f"fine-tuning from ImageNet weights ({cached})"
    return "none", f"ImageNet weights not cached ({cached} missing): training from scratch"


def quickstart(out: Path | str = "tlexport-quickstart", epochs: int = 12, per_class: int = 150,
               image_size: int = 48, progress=None) -> QuickstartResult:
    """Generate a small shapes dataset, fine-tune resnet18, evaluate, and run the later stages.

    Args:
        out: folder for the data, the run and its exports (must be empty or absent). When any
            stage fails or is interrupted, what this call wrote there is removed again (a second
            quickstart into a half-written folder would be refused).
        progress: a tlexport.train.Progress for messages and epoch bars.
    Returns:
        QuickstartResult with every stage's result.
    Raises:
        UsageError: `out` is not empty, or a bad option (before anything is written);
        TrainingInterrupted: Ctrl-C or SIGTERM (exit 130 / 143).
    """
    from .training.loop import Progress
    from .training.signals import TrainingInterrupted, signal_number, stop_on_signals

    progress = progress or Progress()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty; choose another --out")
    weights, note = pick_weights("resnet18")
    cfg = quickstart_config(out, epochs, image_size, weights)
    cfg.validate()  # before anything is written
    with stop_on_signals():
        try:
            with made_dirs(out):
                return _run_all(cfg, out, per_class, weights, note, progress)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, or the run's TrainingInterrupted
            signum = signal_number(e)
            what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            raise TrainingInterrupted(f"{what}; the partial quickstart in {out} was removed", signum) from None


def quickstart_config(out: Path, epochs: int, image_size: int, weights: str):
    """The quickstart's recipe. Small images keep it to about a minute on 2 CPU cores; crops keep
    >= 35% of the image so the shape (the whole label) is rarely cut away."""
    from .training.config import TrainConfig

    return TrainConfig(
        data=str(out / "data"), arch="resnet18", weights=weights, epochs=epochs, batch_size=32,
        optimizer="adamw", lr=2e-3 if weights == "none" else 5e-4, weight_decay=1e-4,
        warmup_epochs=0.5, crop_scale=0.35, val_fraction=0.2, image_size=image_size,
        out=str(out / "run"),
    )


def _run_all(cfg, out: Path, per_class: int, weights: str, note: str, progress) -> QuickstartResult:
    """Every stage; on any failure the data and run folders this quickstart made are removed."""
    from .training.evaluate import evaluate
    from .training.loop import train

    data = Path(cfg.data)
    try:
        progress.message(f"generating {per_class * 4} images of 4 shapes in {data}")
        make_dataset(data, classes=SHAPES[:4], per_class=per_class, size=64, seed=0)
        progress.message(note)
        result = QuickstartResult(out, data, weights)
        result.train = train(cfg, progress)
        result.eval = evaluate(result.train.run_dir)
        run_later_stages(result, progress)
        return result
    except BaseException:
        for made in (data, Path(cfg.out)):
            shutil.rmtree(made, ignore_errors=True)
        raise


def run_later_stages(result: QuickstartResult, progress) -> None:
    """export (fp32 ONNX + TorchScript + int8, self-verified) -> parity -> bench -> predict."""
    from .benchmark import bench
    from .exporters.pipeline import export
    from .inference import predict
    from .progress import stages_only
    from .verify.parity import parity

    run_dir = result.train.run_dir
    progress.message("exporting ONNX fp32, TorchScript and ONNX int8 (then verifying them) ...")
    result.steps["export"] = export(run_dir, formats=("onnx", "torchscript"), precisions=("fp32", "int8"),
                                    progress=stages_only(progress.message))  # a line per stage, not per count
    export_dir = result.steps["export"].out_dir
    progress.message("checking parity per image on the val split ...")
    result.steps["parity"] = parity(export_dir, run_dir=run_dir, trust_code=True)  # files it just wrote
    progress.message("benchmarking at batch 1 ...")
    result.steps["bench"] = bench(export_dir, run_dir=run_dir, batch_sizes=(1,), warmup=5, duration=1.0,
                                  runtimes=["torch-eager", "torchscript", "onnxruntime"], trust_code=True)
    samples = [str(p) for p, _ in result.train_samples_for_predict()]
    result.steps["predict"] = predict(export_dir / "model.onnx", samples, top_k=2)
