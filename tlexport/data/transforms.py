"""The dataset transforms, each in two halves so the deterministic one can be cached:

- `prepare(source)`: file -> uint8 HWC array. Torch-free and deterministic: the decode at the
  smallest JPEG scale the rest needs (`images.open_rgb`) and the fixed resize. This is what the
  training image cache keeps (`cache.py`), keyed by `variant`.
- `finish(array)`: -> normalised float tensor CHW, with the random augmentation of training.

Called on a PIL image they run both halves after the decode, as torchvision transforms do.
"""

from __future__ import annotations

import numpy as np

from . import images


class _Transform:
    side: int  # the shorter side `load` decodes to at least
    variant: str  # what `prepare` does, for cache keys
    transforms: list  # the torchvision steps of `finish`

    def __init__(self, pre):
        self.pre = pre

    def load(self, source):
        """The file decoded for this transform: JPEGs at the smallest DCT scale keeping `side`."""
        return images.open_rgb(source, min_side=self.side, check_size=self.pre.check_size)

    def prepare(self, source) -> np.ndarray:
        return self.reduce(self.load(source))

    def reduce(self, img) -> np.ndarray:
        raise NotImplementedError

    def finish(self, arr: np.ndarray):
        x = arr if arr.flags.writeable else arr.copy()  # torch.from_numpy warns on read-only arrays
        for t in self.transforms:
            x = t(x)
        return x

    def __call__(self, img):
        return self.finish(self.reduce(img))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.variant})"


class EvalTransform(_Transform):
    """Resize + centre crop in Pillow/numpy (`Preprocess.crop_uint8`, the same code predict runs),
    then ToTensor + Normalize: the tensor equals `Preprocess.to_array` of the same image."""

    def __init__(self, pre):
        from torchvision import transforms as T

        super().__init__(pre)
        self.side = pre.resize
        self.variant = f"eval:resize={pre.resize}:crop={pre.crop}:{pre.interpolation}"
        self.transforms = [T.ToTensor(), T.Normalize(pre.mean, pre.std)]

    def reduce(self, img) -> np.ndarray:
        return self.pre.crop_uint8(img)


class TrainTransform(_Transform):
    """Shrink the shorter side to `Preprocess.train_side`, then RandomResizedCrop + flip (+ an
    auto-augment policy) + ToTensor + Normalize."""

    def __init__(self, pre, min_scale: float = 0.08, auto_augment: str = "none"):
        from torchvision import transforms as T

        super().__init__(pre)
        self.side = pre.train_side(min_scale)
        self.variant = f"train:side={self.side}:{pre.interpolation}"
        steps = [T.RandomResizedCrop(pre.crop, scale=(min_scale, 1.0), interpolation=_tv_interp(pre.interpolation)),
                 T.RandomHorizontalFlip()]
        if auto_augment != "none":
            steps.append(_auto_augment(auto_augment, pre.interpolation))
        self.transforms = [_to_pil, *steps, T.ToTensor(), T.Normalize(pre.mean, pre.std)]

    def reduce(self, img) -> np.ndarray:
        self.pre.check_size(*img.size)
        w, h = images.resized_size(*img.size, self.side)
        if min(img.size) > self.side:
            img = img.resize((w, h), images.pil_filter(self.pre.interpolation))
        return np.asarray(img, dtype=np.uint8)


def _to_pil(arr):
    from PIL import Image

    return Image.fromarray(arr)


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
