"""One training run in progress, composed of its concerns: the inputs (data, loaders), the
trainable side (model, optimiser, engine), the head stage's features, the history (best epoch,
early stopping) and the run folder (checkpointing). The epoch loop lives here; every step goes
through the engine."""

from __future__ import annotations

import random
import time

from ..errors import TlexportError
from ..run import RunDir
from ..run.layout import CURVES
from . import checkpoint as C
from . import distributed as D
from . import features as F
from .config import TrainConfig
from .history import EpochStats, History, Progress, TrainResult
from .inputs import image_batches, load_inputs
from .signals import deferred
from .torchutil import predict_logits, set_backbone_frozen, set_train_mode
from .trainable import Trainable


class Session:
    """State of one training run: built from a config (new run) or a checkpoint (resume).

    Args:
        folder: the run folder (None: nothing is written, as for lr-find).
        pretrained: False skips loading cfg.weights (a resumed run takes the checkpoint's).
        recorded: (split.json dict, classes, data root) reuses a run's split instead of scanning.
    """

    def __init__(self, cfg: TrainConfig, folder: RunDir | None, progress: Progress, pretrained: bool = True,
                 recorded: tuple | None = None):
        import torch

        self.cfg, self.folder, self.progress = cfg, folder, progress
        self.device = D.setup(cfg.device, cfg.dist_timeout)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.inputs = load_inputs(cfg, self.device, progress, recorded)
        self.trainable = Trainable(cfg, self.inputs, self.device, pretrained)
        self.head = F.HeadStage(cfg, self.inputs, self.device, self.trainable.val_dtype,
                                folder.path if folder is not None else None)
        self.head_data = None  # this epoch's cached features (None: it trains on images)
        self.history = History(cfg.patience)

    @property
    def notes(self) -> list[str]:
        return self.inputs.notes

    def resume_from(self, ckpt: dict) -> None:
        self.trainable.load_state_dict(ckpt)
        self.history.load_state_dict(ckpt)

    def run_epoch(self) -> EpochStats:
        cfg, epoch, model = self.cfg, self.history.epoch, self.trainable.model
        frozen = cfg.linear_probe or epoch < cfg.freeze_epochs
        set_backbone_frozen(model, cfg.arch, frozen)
        set_train_mode(model, cfg.arch, frozen)
        phase = "head" if frozen else "full"
        self.inputs.sampler.set_epoch(epoch)  # same order on resume
        D.reseed_rank(cfg.seed, epoch)
        lr = self.trainable.optimizer.param_groups[-1]["lr"]  # the head's, at the epoch's first step
        start = time.perf_counter()
        self.head_data = self.head.features(model, self.progress) if frozen else None
        self.progress.start_epoch(epoch + 1, cfg.epochs, self.inputs.steps, phase)
        net, batches = self.epoch_source(phase)
        totals = self.trainable.engine(on_features=self.head_data is not None).epoch(
            net, batches, self.inputs.steps, self.progress)
        loss, acc, rate = D.reduce_epoch(totals.loss, totals.acc, totals.images_per_s, self.device)
        val_loss, val_acc = self.validate(self.trainable.eval_model)
        raw_acc = self.validate(model)[1] if self.trainable.ema is not None else None
        stats = EpochStats(epoch + 1, phase, lr, loss, acc, val_loss, val_acc, rate, time.perf_counter() - start,
                           raw_acc)
        self.progress.end_epoch(stats)
        return stats

    def epoch_source(self, phase: str):
        """(the network that trains, its micro-batches): the head block on cached features, or
        the model (frozen body or not) on images."""
        inputs = self.inputs
        if self.head_data is None:
            return self.trainable.network(phase), image_batches(inputs.train_loader, self.device, inputs.batches)
        net = self.trainable.network("features", self.head_data.block)
        net.train()
        return net, F.head_batches(self.head_data, inputs.sampler, self.cfg.batch_size, inputs.batches,
                                   self.cfg.seed, self.device)

    def validate(self, model) -> tuple[float, float]:
        """Val loss and accuracy of `model`: on the cached features when it is the model whose
        head trains on them, else over this rank's share of the val images, summed over the ranks."""
        import torch

        if self.head_data is not None and model is self.trainable.model:
            loss_sum, correct, n = F.head_validate(self.head_data.block, self.head_data)
        else:
            D.sync_module(model, buffers_only=True)  # rank 0's BatchNorm statistics, as saved
            logits, labels = predict_logits(model, self.inputs.val_loader, self.device, self.trainable.val_dtype)
            local = [0.0, 0.0, 0.0]
            if labels.numel():
                local = [torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item(),
                         (logits.argmax(1) == labels).sum().item(), labels.numel()]
            loss_sum, correct, n = D.all_reduce_sum(local, self.device)
        if n == 0:
            raise TlexportError("no validation image could be read")
        return loss_sum / n, correct / n

    def finish_epoch(self, stats: EpochStats) -> None:
        is_best = self.history.record(stats, self.inputs.steps)
        if D.is_main():  # save_on_master: the other ranks never write
            with deferred():  # a stop signal waits until the epoch's files are all written
                C.save_epoch(self.folder, self, is_best)
        D.barrier()  # the checkpoint is complete before any rank trains on

    def write_start_files(self) -> None:
        C.write_start_files(self.folder, self, self.progress)

    def loop(self) -> TrainResult:
        while self.history.epoch < self.cfg.epochs and not self.history.stopper.stopped:
            self.finish_epoch(self.run_epoch())
        history = self.history
        if history.stopper.stopped:
            self.progress.message(f"early stop after epoch {history.stopper.stopped_epoch}: no val accuracy gain "
                                  f"for {self.cfg.patience} epoch(s); best {history.best_acc:.1%} at epoch "
                                  f"{history.best_epoch}")
        from ..render import plot_curves

        if D.is_main():
            plot_curves(self.folder.file(CURVES), history.epochs)
        return self.result()

    def result(self) -> TrainResult:
        h = self.history
        return TrainResult(
            run_dir=self.folder.path, classes=self.inputs.classes, best_val_accuracy=h.best_acc,
            best_epoch=h.best_epoch, epochs=h.epoch, weights_file=self.folder.weights_file("best"),
            weights_source=self.trainable.source.kind, device=str(self.device), history=h.epochs,
            skipped=len(self.inputs.scanned.skipped), notes=self.notes, stopped_epoch=h.stopper.stopped_epoch,
        )
