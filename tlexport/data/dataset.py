"""The training Dataset: (tensor, label) pairs decoded on demand, broken files dropped."""

from __future__ import annotations

from .folders import Sample
from .images import BadImage, load_rgb


class ImageDataset:
    """A torch-style Dataset of (tensor, label). A file that fails to decode at training time
    (changed since the scan) yields None, which `collate_skip_none` drops, so an epoch goes on."""

    def __init__(self, samples: list[Sample], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            return self.transform(load_rgb(path)), label
        except BadImage:
            return None


def collate_skip_none(batch):
    from torch.utils.data import default_collate

    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None
