"""The training Dataset: (tensor, label) pairs decoded on demand, broken files dropped, the
deterministic half of the transform optionally cached (`cache.ImageCache`)."""

from __future__ import annotations

from .check import Sample
from .images import BadImage, load_rgb


class ImageDataset:
    """A torch-style Dataset of (tensor, label). A file that fails to decode at training time
    (changed since the scan) yields None, which `collate_skip_none` drops, so an epoch goes on.

    Args:
        transform: a `transforms.EvalTransform` / `TrainTransform` (what `Preprocess.eval_transform`
            and `train_transform` return): `prepare(file)` decodes at the size it needs and
            `finish` makes the tensor. Any other callable is applied to the full-size image.
        cache: an `ImageCache` holding `prepare`'s results between epochs, runs and ranks.
    """

    def __init__(self, samples: list[Sample], transform, cache=None):
        self.samples, self.transform, self.cache = samples, transform, cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        t = self.transform
        try:
            if not hasattr(t, "prepare"):
                return t(load_rgb(path)), label
            arr = self.cache.fetch(path, t) if self.cache is not None else t.prepare(path)
            return t.finish(arr), label
        except BadImage:
            return None


def collate_skip_none(batch):
    from torch.utils.data import default_collate

    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None
