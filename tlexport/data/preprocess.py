"""The one definition of preprocessing.

A `Preprocess` travels from the pretrained weights into the run directory and from there into
every exported artifact. Decoding and the torch-free eval path (resize, crop, normalise) are
`images.py`'s, which predict, parity, export and the example apps use; the dataset transforms
(`transforms.py`) run the same decode and the same Pillow resize before their torch half, so
training, evaluation and serving agree to float rounding.

This module must not import torch at module level: `predict` for ONNX runs without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..tables.metadata import INTERPOLATIONS, MIN_STD, check_preprocess
from . import images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Training keeps images at a shorter side of at most this many crops (see Preprocess.train_side):
# a 224-pixel crop trains from images of 448 pixels, whatever the camera wrote.
TRAIN_SIDE_CAP = 2.0


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing: resize the shorter side, centre-crop, scale to [0,1], normalise.

    Args:
        resize: target length of the image's shorter side, in pixels.
        crop: side of the square centre crop fed to the network.
        mean, std: per-channel normalisation applied to RGB values in [0, 1].
        interpolation: resize filter, one of nearest, bilinear, bicubic (antialiased).
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # Fixed facts about the input layout, recorded so an app need not guess them.
    color_order: str = field(default="RGB", compare=False)
    layout: str = field(default="NCHW", compare=False)
    value_range: tuple[float, float] = field(default=(0.0, 1.0), compare=False)

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
        if self.crop <= 0 or self.resize < self.crop:
            raise ValueError("need 0 < crop <= resize")
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(s) and s >= MIN_STD for s in self.std):
            raise ValueError("mean must be finite and std finite and positive")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, weights) -> "Preprocess":
        """Read resize/crop/mean/std/interpolation from a torchvision weights enum."""
        t = weights.transforms()
        return cls(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(float(v) for v in t.mean),
            std=tuple(float(v) for v in t.std),
            interpolation=t.interpolation.value,
        )

    def with_crop(self, crop: int) -> "Preprocess":
        """Same normalisation at another input size, keeping the weights' resize/crop ratio."""
        resize = int(round(crop * self.resize / self.crop))
        return Preprocess(resize, crop, self.mean, self.std, self.interpolation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"], d["value_range"] = list(self.mean), list(self.std), list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict, source="preprocessing") -> "Preprocess":
        """From a stored dict (run.json, artifact metadata), validated by the metadata schema.

        Raises:
            ArtifactError: a missing or bad field, named.
        """
        d = check_preprocess(d, source)
        return cls(resize=d["resize"], crop=d["crop"], mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d["interpolation"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    # ---- torch-free path (Pillow + numpy): tlexport/data/images.py ---------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """Output (w, h) after resizing the shorter side, computed as torchvision does."""
        return images.resized_size(width, height, self.resize)

    def check_size(self, width: int, height: int) -> None:
        """Refuse an image whose resize would exceed max(MAX_RESIZED_PIXELS, MAX_ASPECT x resize²)
        (checked from the header, before any decoding or resizing work).

        Raises:
            BadImage: naming both sizes; callers skip the file with this reason and go on.
        """
        images.check_resize(width, height, self.resize)

    def load(self, source):
        """The file decoded as every eval path decodes it: JPEGs at the smallest DCT scale that
        keeps the resize target, the size bound applied from the header (`images.open_rgb`)."""
        return images.open_rgb(source, min_side=self.resize, check_size=self.check_size)

    def to_array(self, img) -> np.ndarray:
        """PIL RGB image -> float32 CHW array, normalised, exactly as the eval transform."""
        return self.normalize(self.crop_uint8(img)).transpose(2, 0, 1)

    def crop_uint8(self, img) -> np.ndarray:
        """PIL RGB image -> uint8 HWC array after resize and centre crop (what a camera app feeds
        to a model with baked-in normalisation)."""
        return images.resize_crop(img, self.resize, self.crop, self.interpolation)

    def normalize(self, hwc_uint8: np.ndarray) -> np.ndarray:
        """uint8 HWC -> float32 HWC normalised."""
        return images.normalize(hwc_uint8, self.mean, self.std)

    def train_side(self, min_scale: float = 0.08) -> int:
        """The shorter side a training image is decoded and kept at: where the smallest random
        crop (area fraction `min_scale`) is not upsampled, capped at TRAIN_SIDE_CAP x the crop,
        and never below the eval resize.

        RandomResizedCrop picks a fraction of the area, so shrinking the image first changes the
        resolution a crop is taken from, never which part of the image it covers.
        """
        factor = min(TRAIN_SIDE_CAP, 1.0 / math.sqrt(min_scale))
        return max(self.resize, math.ceil(self.crop * factor - 1e-9))

    # ---- dataset transforms (torchvision; tlexport/data/transforms.py) -----------------------------
    def eval_transform(self):
        """Eval preprocessing for a dataset: `prepare(file)` -> uint8 crop (decoded at the resize
        target), `finish(crop)` -> normalised float tensor CHW; callable on a PIL RGB image too."""
        from .transforms import EvalTransform

        return EvalTransform(self)

    def train_transform(self, augment: bool = True, min_scale: float = 0.08, auto_augment: str = "none"):
        """Training transform: the image decoded and shrunk to `train_side(min_scale)`, then
        RandomResizedCrop (area fraction in [min_scale, 1]) + horizontal flip, then optionally
        RandAugment (`auto_augment="rand"`: 2 ops at magnitude 9, the torchvision defaults) or
        TrivialAugmentWide (`"trivial"`), from transforms.v2; or the eval transform when
        `augment` is off."""
        if not augment:
            return self.eval_transform()
        from .transforms import TrainTransform

        return TrainTransform(self, min_scale, auto_augment)
