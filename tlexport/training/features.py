"""The cached-feature head stage: while the backbone is frozen its output for an image never
changes, so it is computed once per image (and per cached augmented view) and the head trains on
those features, an epoch costing about as much as one matrix product.

The features are the model with its head replaced by Identity (the registry's `head` path). Dropout
right before the head in the same Sequential (efficientnet, mobilenet_v3, vgg, ...) stays with the
head, so it is still applied while the head trains, as in the frozen stage without the cache.

Every feature is keyed by sha256(file bytes) + the view (eval preprocessing, or augmented view k
with its settings and seed) + the preprocessing + the backbone's weights (sha256) + the autocast
dtype, so a changed image, preprocessing or backbone is never served from the cache. Features live
in memory, or on disk beside the run (`feature-cache/`, memory-mapped .npy chunks) for large sets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_path, read_json, sha256, write_text
from ..run.layout import FEATURE_CACHE
from ..tables import archs
from . import distributed as D

MEMORY_LIMIT = 2 << 30  # auto: features bigger than this go to disk
FORMAT_VERSION = 1


# ---- the head and the body ----------------------------------------------------------------------
def head_block(model, arch: str):
    """(Sequential(dropout before the head..., head), None) when the head can train on cached
    features, else (None, why not): the head must be a Linear and the last layer of its block."""
    import torch.nn as nn

    path = archs.get(arch).head
    head = model.get_submodule(path)
    if not isinstance(head, nn.Linear):
        return None, f"the head of {arch} ({path}) is not a Linear layer"
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if not isinstance(parent, nn.Sequential):
        return nn.Sequential(head), None
    children = list(parent.named_children())
    position = [n for n, _ in children].index(name)
    if position != len(children) - 1:
        return None, f"layers follow the head of {arch} ({path}) in its block"
    before = []
    for _, module in reversed(children[:position]):
        if not isinstance(module, nn.modules.dropout._DropoutNd):
            break
        before.insert(0, module)
    return nn.Sequential(*before, head), None


@contextlib.contextmanager
def headless(model, arch: str):
    """The model with its head replaced by Identity (its output: the head's input features)."""
    import torch.nn as nn

    path = archs.get(arch).head
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = getattr(parent, name)
    setattr(parent, name, nn.Identity())
    try:
        yield model
    finally:
        setattr(parent, name, head)


def backbone_hash(model, arch: str) -> str:
    """sha256 of every tensor of the model but its head (weights and BatchNorm statistics)."""
    import torch

    prefix = archs.get(arch).head_prefix
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not name.startswith(prefix):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---- keys -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """One cached view of an image: "eval" (eval preprocessing) or augmented view `index`."""

    kind: str
    index: int = 0

    def transform(self, pre, cfg):
        if self.kind == "eval":
            return pre.eval_transform()
        return pre.train_transform(cfg.augment, cfg.crop_scale, cfg.auto_augment)

    def tag(self, cfg) -> str:
        if self.kind == "eval":
            return "eval"
        tag = f"aug{self.index}:seed={cfg.seed}:augment={cfg.augment}:scale={cfg.crop_scale}"
        return tag if cfg.auto_augment == "none" else f"{tag}:auto={cfg.auto_augment}"


def context_hash(arch: str, pre, backbone: str, dtype) -> str:
    """What every feature depends on besides the image and its view."""
    text = json.dumps({"v": FORMAT_VERSION, "arch": arch, "preprocess": pre.to_dict(), "backbone": backbone,
                       "dtype": str(dtype)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def feature_key(context: str, file_hash: str, view_tag: str) -> str:
    return hashlib.sha256(f"{context}|{file_hash}|{view_tag}".encode()).hexdigest()


def file_hashes(paths) -> dict:
    """sha256 of each file's bytes ('' for a file that cannot be read: it is never cached)."""
    out = {}
    for p in paths:
        try:
            out[p] = sha256(p)
        except OSError:
            out[p] = ""
    return out


# ---- the store ------------------------------------------------------------------------------------
class FeatureStore:
    """Features by key: in memory (one tensor per fill), or on disk as .npy chunks named by a
    .keys.json written after them (a chunk without its keys file is ignored), memory-mapped."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self.arrays: list = []
        self.index: dict[str, tuple[int, int]] = {}
        self.computed = 0  # features this store computed (not found), for reports and tests
        if directory is not None:
            self.refresh()

    def refresh(self) -> None:
        """Map every complete chunk on disk (after another process added one)."""
        import numpy as np

        if self.directory is None or not self.directory.is_dir():
            return
        known = {str(Path(a.filename).resolve()) for a in self.arrays}
        for keys_file in sorted(self.directory.glob("*.keys.json")):
            npy = keys_file.with_name(keys_file.name[: -len(".keys.json")] + ".npy")
            if str(npy.resolve()) in known or not npy.is_file():
                continue
            arr = np.load(npy, mmap_mode="r")
            self._register(arr, read_json(keys_file, error=DataError))

    def _register(self, arr, keys: list[str]) -> None:
        a = len(self.arrays)
        self.arrays.append(arr)
        for row, key in enumerate(keys):
            self.index[key] = (a, row)

    def add(self, keys: list[str], feats, write: bool = True) -> None:
        """Keep `feats` (float32, one row per key). On disk only the writer (`write`) saves them;
        the others pick them up with refresh() after a barrier."""
        import numpy as np

        if not keys:
            return
        if self.directory is None:
            self._register(feats, keys)
            return
        if write:  # the chunk is mapped by refresh(), in this process as in the others
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = self.directory / f"part-{uuid.uuid4().hex[:12]}"
            with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as f:
                np.save(f, feats.numpy().astype(np.float32))
            write_text(stem.with_suffix(".keys.json"), json.dumps(keys))


@dataclass
class Table:
    """Features of one split: loc[i, v] = (array, row) of sample i's view v; (-1, -1) when the
    image could not be read. labels[i] is its class."""

    store: FeatureStore
    loc: object  # LongTensor (N, V, 2)
    labels: object  # LongTensor (N,)

    def valid(self, items):
        return self.loc[items[:, 0], items[:, 1], 0] >= 0

    def gather(self, items):
        """Float32 features (B, D) for items (B, 2) = (sample, view); all must be valid."""
        import numpy as np
        import torch

        loc = self.loc[items[:, 0], items[:, 1]]
        parts, order = [], []
        for a in loc[:, 0].unique().tolist():
            m = (loc[:, 0] == a).nonzero().flatten()
            arr = self.store.arrays[a]
            rows = loc[m, 1]
            parts.append(arr[rows] if isinstance(arr, torch.Tensor)
                         else torch.from_numpy(np.ascontiguousarray(arr[rows.numpy()])))
            order.append(m)
        out = torch.cat(parts)
        return out[torch.argsort(torch.cat(order))]


# ---- computing what is missing --------------------------------------------------------------------
class _ViewDataset:
    """(image tensor, item index) for each (path, view) to compute; None for an unreadable file.
    An augmented view draws its randomness from its key, so it is the same whoever computes it."""

    def __init__(self, items, pre, cfg):
        self.items = items  # (key, path, View)
        self.transforms = {}
        self.pre, self.cfg = pre, cfg

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torch

        from ..data.images import BadImage

        key, path, view = self.items[i]
        tf = self.transforms.setdefault(view.kind, view.transform(self.pre, self.cfg))
        try:
            img = tf.load(path)
        except BadImage:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(key[:15], 16))
            return tf(img), i


def compute(model, arch: str, items, pre, cfg, device, dtype) -> tuple[list[str], object]:
    """Features of `items` (key, path, View) through the headless model in eval mode.
    Returns (keys that could be read, float32 CPU tensor with one row per key)."""
    import torch
    from torch.utils.data import DataLoader

    from ..data.dataset import collate_skip_none
    from .torchutil import to_device

    loader = DataLoader(_ViewDataset(items, pre, cfg), batch_size=max(cfg.batch_size, 32), shuffle=False,
                        num_workers=cfg.workers or 0, collate_fn=collate_skip_none)
    keys, outs = [], []
    model.eval()
    with headless(model, arch), torch.inference_mode():
        for batch in loader:
            if batch is None:
                continue
            x, idx = to_device(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs.append(model(x).float().flatten(1).cpu())
            keys += [items[i][0] for i in idx.tolist()]
    return keys, (torch.cat(outs) if outs else torch.zeros(0, 0))


def fill(store: FeatureStore, model, arch, wanted: dict, pre, cfg, device, dtype) -> None:
    """Compute the wanted features the store lacks, split over the ranks, and share them."""
    missing = sorted(k for k in wanted if k not in store.index)
    mine = [(k, *wanted[k]) for k in missing[D.rank()::D.world_size()]]
    keys, feats = compute(model, arch, mine, pre, cfg, device, dtype)
    store.computed += len(missing)
    import torch

    shares = [(k, f) for k, f in D.all_gather_objects((keys, feats)) if k]
    if shares:
        all_keys = [k for share_keys, _ in shares for k in share_keys]
        # on disk only rank 0 writes (one chunk); the others map it after the barrier
        store.add(all_keys, torch.cat([f for _, f in shares]), write=D.is_main())
    if store.directory is not None:
        D.barrier()
        store.refresh()


# ---- the head stage -------------------------------------------------------------------------------
@dataclass
class HeadData:
    """What the head stage trains and validates on."""

    block: object  # Sequential(dropout..., head): shares its parameters with the model
    train: Table
    val: Table
    views: int
    cache: str  # memory | disk
    computed: int  # features computed (the rest came from the cache)
    seconds: float


def choose_cache(mode: str, images: int, width: int) -> str:
    if mode != "auto":
        return mode
    return "memory" if images * width * 4 <= MEMORY_LIMIT else "disk"


def features_usable(cfg) -> bool:
    """MixUp and CutMix mix images, not features: with either on, the head stage runs the frozen
    model on the mixed images (mixing features instead would be a different method)."""
    return not (cfg.mixup or cfg.cutmix)


def prepare(model, arch: str, inputs, cfg, device, dtype, run_dir: Path, stores: dict) -> HeadData | None:
    """Features for the train and val splits, from the cache where the keys match. Returns None
    when the head cannot train on features (see head_block) or the cache is off.

    Args:
        inputs: the training inputs: `.scanned` (the split's samples) and `.pre` (preprocessing).
        stores: the run's FeatureStores by mode, kept by the caller across epochs and calls.
    """
    scanned, pre = inputs.scanned, inputs.pre
    block, _ = head_block(model, arch)
    if block is None or cfg.feature_cache == "off" or not features_usable(cfg):
        return None
    start = time.perf_counter()
    views = [View("aug", k) for k in range(cfg.cache_views)] or [View("eval")]
    hashes = file_hashes({p for p, _ in scanned.train + scanned.val})
    context = context_hash(arch, pre, backbone_hash(model, arch), dtype)
    wanted: dict[str, tuple] = {}

    def keys_for(samples, split_views):
        return [[_want(wanted, context, hashes[p], p, v, cfg) for v in split_views] for p, _ in samples]

    train_keys, val_keys = keys_for(scanned.train, views), keys_for(scanned.val, [View("eval")])
    cache = choose_cache(cfg.feature_cache, len(wanted), block[-1].in_features)
    store = stores.get(cache) or stores.setdefault(
        cache, FeatureStore(run_dir / FEATURE_CACHE if cache == "disk" else None))
    before = store.computed
    fill(store, model, arch, {k: v for k, v in wanted.items() if v is not None}, pre, cfg, device, dtype)
    train, val = _table(store, train_keys, scanned.train), _table(store, val_keys, scanned.val)
    return HeadData(block, train, val, len(views), cache, store.computed - before, time.perf_counter() - start)


def _want(wanted: dict, context: str, file_hash: str, path, view: View, cfg) -> str:
    key = feature_key(context, file_hash, view.tag(cfg)) if file_hash else f"unreadable:{path}"
    wanted[key] = (path, view) if file_hash else None
    return key


def _table(store: FeatureStore, keys: list[list[str]], samples) -> Table:
    import torch

    loc = torch.tensor([[store.index.get(k, (-1, -1)) for k in row] for row in keys],
                       dtype=torch.long).reshape(len(keys), -1, 2)
    return Table(store, loc, torch.tensor([y for _, y in samples], dtype=torch.long))


def head_batches(data: HeadData, sampler, batch_size: int, batches: int, seed: int, device):
    """The head stage's micro-batches for the engine: the sampler's order (this rank's share, as
    the image loader would have it), each image in one of its cached views, `batches` batches of
    (features, labels) on `device`; None for a batch whose every image was unreadable."""
    import torch

    order = torch.tensor(sampler.order(), dtype=torch.long)
    g = torch.Generator().manual_seed(seed * 1000 + sampler.epoch + 1)
    view = torch.randint(data.views, (len(order),), generator=g)
    items = torch.stack([order, view], 1)
    for b in range(batches):
        batch = items[b * batch_size:(b + 1) * batch_size]
        batch = batch[data.train.valid(batch)]
        if not len(batch):
            yield None
            continue
        yield data.train.gather(batch).to(device), data.train.labels[batch[:, 0]].to(device)


class HeadStage:
    """The head stage's features for a session, prepared once: the frozen backbone does not
    change between head epochs. `features()` is None when the head trains through the frozen
    model instead (a head that cannot train on features, mixing on, or the cache off)."""

    def __init__(self, cfg, inputs, device, dtype, run_dir: Path | None):
        self.cfg, self.inputs, self.device, self.dtype, self.run_dir = cfg, inputs, device, dtype, run_dir
        self.prepared = None  # HeadData, False (no features), or None (not asked yet)
        self.stores: dict = {}  # FeatureStores by mode, kept across epochs

    def features(self, model, progress) -> HeadData | None:
        if self.prepared is not None:
            return self.prepared or None
        cfg = self.cfg
        data = prepare(model, cfg.arch, self.inputs, cfg, self.device, self.dtype, self.run_dir, self.stores)
        if data is not None and data.computed:
            progress.message(f"cached backbone features of {data.computed} image view(s) "
                             f"({data.cache}, {data.seconds:.1f} s)")
        elif data is None and cfg.feature_cache != "off":
            progress.message(f"head epochs run the frozen model: {head_block(model, cfg.arch)[1]}")
        self.prepared = data or False
        return data


def head_validate(block, data: HeadData) -> tuple[float, float, int]:
    """(summed loss, correct, images) of the head on the cached val features (the full val split,
    on every rank: it costs one small matrix product)."""
    import torch

    items = torch.stack([torch.arange(len(data.val.labels)), torch.zeros(len(data.val.labels), dtype=torch.long)], 1)
    items = items[data.val.valid(items)]
    if not len(items):
        return 0.0, 0.0, 0
    block.eval()
    with torch.inference_mode():
        x = data.val.gather(items).to(_device(block))
        y = data.val.labels[items[:, 0]].to(x.device)
        logits = block(x).float()
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
    return loss, float((logits.argmax(1) == y).sum().item()), len(y)


def _device(module):
    return next(module.parameters()).device
