"""The architecture registry: one row per torchvision image classifier tlexport can fine-tune.

A row says what torchvision does not: where the classifier head is (it is replaced for your
classes), which input sizes the network accepts, which int8 layers stay in float by default, the
fp32 parity tolerance its depth needs, and which export formats cannot work for it and why.
Everything torchvision already knows (builder, weights enum and so preprocessing, parameter
count, GFLOPs) is read from torchvision itself, never copied here.

Importing this module is torch-free; torchvision is imported when a row is asked for a model.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import UsageError

# int8 export's default fallback: every Conv/Gemm int8, then the fewest most sensitive layers kept
# in float until the held-out gate passes (`tlexport.exporters.int8`). A row may name layers
# instead ("stem,head": the first convolution and the classifier) or say "none".
INT8_AUTO = "auto"


@dataclass(frozen=True)
class ArchSpec:
    """What tlexport needs to know about one architecture.

    Args:
        name: torchvision's model name (`torchvision.models.get_model(name)`).
        family: the family it belongs to (resnet, mobilenet_v3, vit, ...).
        head: dotted path of the classifier layer replaced for the user's classes.
        size_multiple: the input side must be a multiple of this (ViT's patch size).
        min_size: the smallest input side the network runs at.
        builder_kwargs: extra keyword arguments for torchvision's builder (e.g. no aux logits).
        ignore_keys: prefixes of pretrained keys that the built model does not have.
        position_embedding: pretrained position embeddings are resized to other input sizes.
        int8_fallback: default of `--int8-fallback`: "auto", "none" or comma-separated node names.
        atol, rtol: fp32 parity tolerance on logits (deeper nets sum in more orders).
        unsupported: "format" or "format/precision" -> the reason it cannot work.
        trace_size_checks: why TorchScript tracer warnings are harmless for this architecture
            (they come from checks and branches on the input's height and width, which the
            artifact fixes); None: every tracer warning fails the export.
        tested: covered by tlexport's own test suite.
    """

    name: str
    family: str
    head: str
    size_multiple: int = 1
    min_size: int = 32
    builder_kwargs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    ignore_keys: tuple[str, ...] = ()
    position_embedding: bool = False
    int8_fallback: str = INT8_AUTO
    atol: float = 1e-4
    rtol: float = 1e-3
    unsupported: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    trace_size_checks: str | None = None
    tested: bool = False

    # ---- facts read from torchvision ------------------------------------------------------------
    @property
    def weights(self):
        """torchvision's DEFAULT ImageNet weights enum (carries url, transforms and meta)."""
        from torchvision import models

        return models.get_model_weights(self.name).DEFAULT

    @property
    def params(self) -> int:
        """Parameters with the 1000-class ImageNet head."""
        return int(self.weights.meta["num_params"])

    @property
    def gflops(self) -> float | None:
        """GFLOPs (multiply-adds, torchvision's count) per image at the weights' input size."""
        ops = self.weights.meta.get("_ops")
        return float(ops) if ops is not None else None

    @property
    def head_prefix(self) -> str:
        return self.head + "."

    def build(self, num_classes: int, image_size: int | None = None):
        """An untrained torchvision model with a `num_classes` head."""
        from torchvision import models

        kwargs = dict(self.builder_kwargs)
        if self.position_embedding and image_size:
            kwargs["image_size"] = image_size
        return models.get_model(self.name, weights=None, num_classes=num_classes, **kwargs)

    def check_size(self, size: int) -> None:
        """UsageError when the network cannot take `size` x `size` inputs."""
        if size < self.min_size:
            raise UsageError(f"{self.name} needs inputs of at least {self.min_size} px, got --image-size {size}")
        if size % self.size_multiple:
            raise UsageError(f"{self.name} needs an input size that is a multiple of {self.size_multiple} "
                             f"(its patch size), got --image-size {size}")

    def unsupported_reason(self, fmt: str, precision: str | None = None) -> str | None:
        """Why `fmt` (at `precision`) cannot work for this architecture (None when it can)."""
        for key in ((f"{fmt}/{precision}",) if precision else ()) + (fmt,):
            if key in self.unsupported:
                return f"{fmt}{'/' + precision if precision else ''} is not available for {self.name}: {self.unsupported[key]}"
        return None


# ---- the rows -----------------------------------------------------------------------------------
# Family defaults: the head path, and anything a whole family shares. Names are matched by
# prefix, longest first.
_FAMILIES: dict[str, dict] = {
    "resnet": dict(head="fc"),
    "wide_resnet": dict(head="fc"),
    "resnext": dict(head="fc"),
    "regnet": dict(head="fc", atol=3e-4),
    "shufflenet_v2": dict(head="fc"),
    "googlenet": dict(head="fc", builder_kwargs={"aux_logits": False, "init_weights": True},
                      ignore_keys=("aux1.", "aux2.")),
    "inception_v3": dict(head="fc", min_size=75, builder_kwargs={"aux_logits": False, "init_weights": True},
                         ignore_keys=("AuxLogits.",)),
    "mobilenet_v2": dict(head="classifier.1"),
    "mobilenet_v3": dict(head="classifier.3"),
    "mnasnet": dict(head="classifier.1"),
    "efficientnet": dict(head="classifier.1", atol=2e-3),
    "convnext": dict(head="classifier.2"),
    "densenet": dict(head="classifier"),
    "vgg": dict(head="classifier.6"),
    "alexnet": dict(head="classifier.6", min_size=63),
    "squeezenet": dict(head="classifier.1", min_size=32),
    "vit": dict(head="heads.head", position_embedding=True,
                trace_size_checks="ViT asserts the input's height and width (torch._assert, attention shape checks)"),
    "swin": dict(head="head",
                 trace_size_checks="Swin pads and shifts its windows by the feature map's height and width"),
    "maxvit": dict(head="classifier.5", size_multiple=32, min_size=64, atol=2e-4),
}

# Architectures the test suite trains and exports (the small ones edge apps want among them).
TESTED = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "resnext50_32x4d",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "regnet_x_800mf", "regnet_y_800mf",
    "convnext_tiny", "convnext_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "vit_b_16", "swin_t",
)

# Per-architecture differences from the family row.
#
# fp32 tolerances (atol; rtol stays 1e-3) come from benchmarks/arch_parity.py: ONNX Runtime vs
# PyTorch eager on 64 px images, 1000-class head, BatchNorm statistics measured on images. The
# largest absolute logit error seen, times 3, rounded up to one significant digit, never below 1e-4:
#   resnet18 4.8e-6, resnet50 9.5e-5, resnet101 4.0e-4, resnet152 1.0e-3, wide_resnet50_2 8.8e-5,
#   resnext50_32x4d 9.1e-5, mobilenet_v2 1.6e-5, mobilenet_v3_small 1.4e-6, efficientnet_b0 1.9e-5,
#   efficientnet_b1 2.3e-3 (its logits reached 40), efficientnet_b2 6.5e-5, efficientnet_b3 6.4e-4,
#   efficientnet_v2_s 2.7e-4, regnet_x_400mf 8.7e-5, shufflenet_v2_x0_5 1.3e-5, convnext_small
#   2.4e-6, vit_b_16 3.0e-6, swin_t 1.1e-6. Unmeasured rows take their family's.
# Deep stacks (resnet152, efficientnet_b1/b3) sum in far more orders than the small nets.
_OVERRIDES: dict[str, dict] = {
    "resnet50": dict(atol=3e-4),
    "resnet101": dict(atol=2e-3),
    "resnet152": dict(atol=3e-3),
    "wide_resnet50_2": dict(atol=3e-4),
    "resnext50_32x4d": dict(atol=3e-4),
    "efficientnet_b0": dict(atol=1e-4),
    "efficientnet_b1": dict(atol=7e-3),
    "efficientnet_b2": dict(atol=2e-4),
    "efficientnet_v2_s": dict(atol=1e-3),
    "vit_b_16": dict(size_multiple=16),
    "vit_b_32": dict(size_multiple=32),
    "vit_l_16": dict(size_multiple=16),
    "vit_l_32": dict(size_multiple=32),
    "vit_h_14": dict(size_multiple=14),
}


def _family(name: str) -> str | None:
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            return prefix
    return None


def _make_row(name: str) -> ArchSpec | None:
    family = _family(name)
    if family is None:
        return None
    row = {**_FAMILIES[family], **_OVERRIDES.get(name, {})}
    for key in ("builder_kwargs", "unsupported"):
        if key in row:
            row[key] = MappingProxyType(dict(row[key]))
    return ArchSpec(name=name, family=family, tested=name in TESTED, **row)


def _torchvision_classifiers() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, ArchSpec]:
    """name -> ArchSpec for every torchvision classifier whose family is known."""
    rows = (_make_row(n) for n in _torchvision_classifiers())
    return {r.name: r for r in rows if r is not None}


def names() -> list[str]:
    return list(registry())


def get(name: str) -> ArchSpec:
    """The row of `name`; UsageError naming the closest matches for an unknown name."""
    rows = registry()
    if name in rows:
        return rows[name]
    close = difflib.get_close_matches(name, list(rows), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(f"unknown architecture {name!r}; {hint}`tlexport archs` lists all {len(rows)}")


def hub_checkpoint_path(arch: str):
    """Where torchvision's downloader caches the ImageNet weights of `arch` (under
    `$TORCH_HOME/hub/checkpoints`; a file placed there is used offline)."""
    import os
    from pathlib import Path
    from urllib.parse import urlparse

    import torch.hub

    name = os.path.basename(urlparse(get(arch).weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def describe(spec: ArchSpec) -> dict:
    """One row of `tlexport archs`: what the registry and torchvision know about `spec`."""
    t = spec.weights.transforms()
    return {
        "arch": spec.name, "family": spec.family, "params_m": round(spec.params / 1e6, 2),
        "gflops": spec.gflops, "weights": str(spec.weights).split(".", 1)[-1],
        "preprocess": {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]),
                       "interpolation": t.interpolation.value},
        "head": spec.head, "min_size": spec.min_size, "size_multiple": spec.size_multiple,
        "int8_fallback": spec.int8_fallback, "atol": spec.atol, "rtol": spec.rtol,
        "unsupported": dict(spec.unsupported), "tested": spec.tested,
        "cached": hub_checkpoint_path(spec.name).is_file(),
    }
