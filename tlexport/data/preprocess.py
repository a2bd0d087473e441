"""The one definition of preprocessing.

A `Preprocess` travels from the pretrained weights into the run directory and from there into
every exported artifact. Two implementations share it: torchvision transforms for training and
evaluation, and a Pillow/numpy version for torch-free inference (`tlexport predict`, edge apps).
They use the same Pillow resize so they agree to float rounding.

This module must not import torch at module level: `predict` for ONNX runs without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..tables.metadata import INTERPOLATIONS, MIN_STD, check_preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Upper bound on an image's size after the shorter-side resize: 16 Mpixels (48 MB of RGB), or a
# 4:1 image at the preprocessing's own resize when that is larger. A legal but extreme shape (a
# 1x20000 strip: 140 bytes of PNG) would otherwise ask for gigabytes.
MAX_RESIZED_PIXELS = 16 * 1024 * 1024
MAX_ASPECT = 4


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

    # ---- torch-free path (Pillow + numpy) -------------------------------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """Output (w, h) after resizing the shorter side, computed as torchvision does."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def check_size(self, width: int, height: int) -> None:
        """Refuse an image whose resize would exceed max(MAX_RESIZED_PIXELS, MAX_ASPECT x resize²)
        (checked from the header, before any decoding or resizing work).

        Raises:
            BadImage: naming both sizes; callers skip the file with this reason and go on.
        """
        from .images import BadImage

        if width < 1 or height < 1:
            raise BadImage(f"empty image ({width}x{height} pixels)")
        w, h = self.resized_size(width, height)
        limit = max(MAX_RESIZED_PIXELS, MAX_ASPECT * self.resize * self.resize)
        if w * h > limit:
            raise BadImage(f"extreme aspect ratio: {width}x{height} pixels would be resized to {w}x{h} "
                           f"(limit {limit} pixels)")

    def load(self, path):
        """`images.load_rgb` with this preprocessing's size bound applied before decoding."""
        from .images import load_rgb

        return load_rgb(path, check_size=self.check_size)

    def to_array(self, img) -> np.ndarray:
        """PIL RGB image -> float32 CHW array, normalised, exactly as the eval transform."""
        return self.normalize(self.crop_uint8(img)).transpose(2, 0, 1)

    def crop_uint8(self, img) -> np.ndarray:
        """PIL RGB image -> uint8 HWC array after resize and centre crop (what a camera app feeds
        to a model with baked-in normalisation)."""
        from PIL import Image

        filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
        self.check_size(*img.size)
        w, h = self.resized_size(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), filters[self.interpolation])
        # torchvision's CenterCrop: offsets rounded, image padded when smaller than the crop.
        arr = np.asarray(img, dtype=np.uint8)
        if arr.shape[0] < self.crop or arr.shape[1] < self.crop:
            ph, pw = max(self.crop - arr.shape[0], 0), max(self.crop - arr.shape[1], 0)
            arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        top = int(round((arr.shape[0] - self.crop) / 2.0))
        left = int(round((arr.shape[1] - self.crop) / 2.0))
        return np.ascontiguousarray(arr[top : top + self.crop, left : left + self.crop])

    def normalize(self, hwc_uint8: np.ndarray) -> np.ndarray:
        """uint8 HWC -> float32 HWC normalised."""
        x = hwc_uint8.astype(np.float32) / 255.0
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def _size_guard(self, img):
        """First step of the eval transform: BadImage (the dataset then drops the file) instead
        of a resize that would need gigabytes."""
        self.check_size(*img.size)
        return img

    # ---- torchvision transforms ------------------------------------------------------------------
    def eval_transform(self):
        """torchvision transform: PIL RGB image -> normalised float tensor CHW."""
        from torchvision import transforms as T

        return T.Compose(
            [
                self._size_guard,
                T.Resize(self.resize, interpolation=_tv_interp(self.interpolation)),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self, augment: bool = True, min_scale: float = 0.08, auto_augment: str = "none"):
        """Training transform: RandomResizedCrop (area fraction in [min_scale, 1]) + horizontal
        flip, then optionally RandAugment (`auto_augment="rand"`: 2 ops at magnitude 9, the
        torchvision defaults) or TrivialAugmentWide (`"trivial"`), from transforms.v2; or the
        eval transform when `augment` is off."""
        if not augment:
            return self.eval_transform()
        from torchvision import transforms as T

        steps = [
            T.RandomResizedCrop(self.crop, scale=(min_scale, 1.0), interpolation=_tv_interp(self.interpolation)),
            T.RandomHorizontalFlip(),
        ]
        if auto_augment != "none":
            steps.append(_auto_augment(auto_augment, self.interpolation))
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])


def _auto_augment(name: str, interpolation: str):
    """A transforms.v2 policy on the PIL image (before ToTensor, as torchvision's references do)."""
    from torchvision.transforms import v2

    if name == "rand":
        return v2.RandAugment(interpolation=_tv_interp(interpolation))
    if name == "trivial":
        return v2.TrivialAugmentWide(interpolation=_tv_interp(interpolation))
    raise ValueError(f"unknown auto_augment {name!r}; use rand, trivial or none")


def _tv_interp(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)
