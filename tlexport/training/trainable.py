"""The model side of a session: the model (channels-last, on the device, rank 0's weights on every
rank), its optimiser, LR schedule, precision, loss, EMA, the DDP wrapper of whatever trains this
epoch, and the engine that steps them."""

from __future__ import annotations

from ..models import build
from . import distributed as D
from .checkpoint import restore_rng
from .config import TrainConfig
from .engine import Engine
from .recipe import make_criterion, make_ema
from .schedule import make_optimizer, make_scheduler
from .torchutil import resolve_precision


class Trainable:
    """Built from a config and the run's inputs; `pretrained=False` skips loading cfg.weights
    (a resumed run takes the checkpoint's)."""

    def __init__(self, cfg: TrainConfig, inputs, device, pretrained: bool = True):
        import torch

        self.cfg, self.device = cfg, device
        classes = len(inputs.classes)
        model, self.source = build(cfg.arch, classes, cfg.weights if pretrained else "none", image_size=inputs.pre.crop)
        self.model = model.to(device).to(memory_format=torch.channels_last)
        D.sync_module(self.model)  # every rank starts from rank 0's weights
        self.optimizer = make_optimizer(self.model, cfg)
        # one choice for all ranks (each rank's speed probe may see a different load)
        self.dtype, self.precision_reason = D.broadcast_object(resolve_precision(device, cfg.precision))
        # CPU validation stays fp32, so best-epoch accuracy is that of the fp32 model that is exported
        self.val_dtype = self.dtype if device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.scheduler = make_scheduler(self.optimizer, cfg, inputs.steps)
        self.criterion = make_criterion(cfg, inputs.scanned.train, classes, device)
        self.ema = make_ema(self.model, cfg)  # None unless --ema
        self.net, self.net_phase = None, None

    @property
    def eval_model(self):
        """The weights that are validated and saved: the EMA model's when --ema is on."""
        return self.ema.module if self.ema is not None else self.model

    def engine(self, on_features: bool = False) -> Engine:
        """The engine for this epoch. The head on cached features trains in fp32 (one small matrix
        product per step); images go through autocast and, for fp16, the gradient scaler."""
        return Engine(self.optimizer, self.criterion, scheduler=self.scheduler,
                      scaler=None if on_features else self.scaler, dtype=None if on_features else self.dtype,
                      ema=self.ema, ema_source=self.model, accumulate=self.cfg.accumulate)

    def network(self, phase: str, module=None):
        """What the epoch trains (the model, or `module`: the head block on features), wrapped in
        DDP in a process group; wrapped again when the phase, and so the trainable set, changes."""
        if phase != self.net_phase:
            self.net, self.net_phase = D.wrap(module if module is not None else self.model, self.device), phase
        return self.net

    def load_state_dict(self, ckpt: dict) -> None:
        """The tensors of a checkpoint (model, optimiser, scaler, schedule, EMA) and its RNG state."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        restore_rng(ckpt["rng"])
