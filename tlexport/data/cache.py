"""tlexport's cache folder and the training image cache.

The folder: `$TLEXPORT_CACHE_DIR`, else `$XDG_CACHE_HOME/tlexport`, else `~/.cache/tlexport`;
never inside the user's data folder. It holds

- `images/`: each training image as the dataset transform's deterministic half left it
  (`transforms.py`: decoded at the smallest JPEG scale, shrunk to the side the augmentation
  needs; for the eval transform the final crop), raw uint8 so a cached epoch sees exactly the
  pixels an uncached one would. An entry's name is a hash of the file's bytes, of what the
  transform does (`variant`) and of the decoder (DECODE_VERSION, Pillow, libjpeg), so a changed
  file, another preprocessing or another Pillow never meets an old entry, and every epoch, resume,
  new run on the same data and DDP rank finds the same one. Entries are written to a temporary
  name and renamed, so concurrent writers (loader workers, ranks) never expose half a file.
- `scan/`: the remembered verdicts of the validity scan (`check.py`).
- `graphs/`: traced ONNX graphs by weights and settings (`formats/onnx/graphcache.py`), so a
  second export of the same run skips the trace.

`--data-cache memory` keeps the entries in the loader process instead (nothing written; each
loader worker holds its own share, within a quarter of the machine's memory in all).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import images

MODES = ("off", "memory", "disk")
DEFAULT_MODE = "disk"
_HEADER = struct.Struct("<4sHHII")  # magic, format version, channels, height, width
_MAGIC, _VERSION = b"TLXI", 1
_MAX_SIDE = 1 << 16
MIN_FREE_BYTES = 1 << 30  # stop adding entries when the disk has less than this free
_FREE_CHECK_EVERY = 64


def cache_dir() -> Path:
    """Where tlexport keeps what it can recompute (the user's cache folder, not the data's)."""
    env = os.environ.get("TLEXPORT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tlexport"


# The marker of a folder tlexport made for its cache (the Cache Directory Tagging convention, so
# backup tools skip it too): `cache --clear` removes a folder only when it holds this file.
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This folder was created by tlexport (its cache); `tlexport cache --clear` removes it.\n")
PARTS = ("images", "scan", "graphs")


def check_place(data_root: Path | str) -> None:
    """Refuse a cache folder inside the data folder (its entries would become images of a class,
    and clearing it would delete data) and a data folder inside the cache folder (clearing the
    cache would delete the data).

    Raises:
        UsageError: naming both folders and the variable that chose the cache's place.
    """
    from ..errors import UsageError

    cache, data = _real(cache_dir()), _real(data_root)
    if cache == data or data in cache.parents:
        raise UsageError(f"the cache folder {cache} is inside the data folder {data}: its files would be taken for "
                         "images; point TLEXPORT_CACHE_DIR (or XDG_CACHE_HOME) somewhere outside the data")
    if cache in data.parents:
        raise UsageError(f"the data folder {data} is inside the cache folder {cache}, which `tlexport cache --clear` "
                         "empties; move the data or point TLEXPORT_CACHE_DIR somewhere else")


def _real(path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def marked_dir(folder: Path) -> Path:
    """Create a cache sub-folder (`images/`, `scan/`) with tlexport's marker. A folder of that name
    that exists without the marker is used only when it is empty or holds nothing but cache
    entries (a cache from before the marker): anything else is not ours.

    Raises:
        OSError: it cannot be created or marked; ValueError: it exists and holds other files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        if not all(_cache_entry(p) for p in folder.iterdir()):
            raise ValueError(f"{folder} exists and holds files tlexport did not write")
        marker.write_text(MARKER_TEXT)
    return folder


def _cache_entry(p: Path) -> bool:
    """What tlexport writes in its cache sub-folders: `ab/<hex key>` image entries, `<hex>.json`
    scan verdicts, and temporaries of either."""
    stem = p.name.lstrip(".").split(".")[0]
    return all(c in "0123456789abcdef" for c in stem) and bool(stem)


def is_marked(folder: Path) -> bool:
    try:
        return (folder / MARKER).read_text().startswith(MARKER_TEXT.splitlines()[0])
    except OSError:
        return False


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_identity(path) -> tuple[int, int, int]:
    """(size, mtime_ns, ctime_ns): a file replaced with the same size and mtime (cp -p, rsync -t,
    a restore) still gets a new ctime."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def decoder_tag() -> str:
    """What decoded pixels depend on besides the file: tlexport's decode rules and Pillow's."""
    import PIL
    from PIL import features

    jpeg = features.version("libjpeg_turbo") or features.version("jpg")
    return f"{images.DECODE_VERSION}|dct={images.DCT_SCALING}|{PIL.__version__}|{jpeg}"


# ---- the image cache --------------------------------------------------------------------------------------
class ImageCache:
    """Prepared training images by (file bytes, transform variant): on disk, in memory, or off.

    Args:
        mode: "off", "memory" or "disk".
        digests: {str(path): (size, mtime_ns, ctime_ns, digest)} from the validity scan; a file
            whose identity no longer matches (or that the scan did not hash) is hashed on first use.
        directory: the cache folder (default `cache_dir()`).
    """

    def __init__(self, mode: str = DEFAULT_MODE, digests: dict | None = None, directory: Path | None = None):
        if mode not in MODES:
            raise ValueError(f"data cache mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.digests = mode, dict(digests or {})
        self.directory = Path(directory or cache_dir()) / "images" if mode == "disk" else None
        self.note = ""
        self.memory: dict[str, np.ndarray] = {}
        self.memory_bytes, self.memory_budget = 0, None
        self.writable, self.puts = mode != "off", 0
        self.tag = decoder_tag()
        if self.directory is not None:
            try:
                marked_dir(self.directory)
            except (OSError, ValueError) as e:
                self.writable = False
                why = e.strerror if isinstance(e, OSError) else "it holds files tlexport did not write"
                self.note = f"cannot use {self.directory} ({why}); images are decoded every epoch"

    def key(self, digest: str, variant: str) -> str:
        return hashlib.blake2b(f"{self.tag}|{variant}|{digest}".encode(), digest_size=16).hexdigest()

    def fetch(self, path, transform) -> np.ndarray:
        """`transform.prepare(path)`, from the cache when it holds it (then stored there).

        Raises:
            BadImage: the file cannot be read or decoded (never cached).
        """
        if self.mode == "off":
            return transform.prepare(path)
        digest, data = self._digest(path)
        key = self.key(digest, transform.variant)
        arr = self.get(key)
        if arr is None:
            arr = transform.prepare(data if data is not None else path)
            self.put(key, arr)
        return arr

    def _digest(self, path) -> tuple[str, bytes | None]:
        """The file's content hash; (hash, bytes) when the file had to be read for it."""
        try:
            ident = file_identity(path)
            known = self.digests.get(str(path))
            if known is not None and tuple(known[:3]) == ident:
                return known[3], None
            data = Path(path).read_bytes()
        except OSError as e:
            raise images.BadImage(f"cannot read ({e.strerror or type(e).__name__})") from None
        digest = digest_bytes(data)
        self.digests[str(path)] = (*ident, digest)
        return digest, data

    # ---- entries ----
    def entry_path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, key: str) -> np.ndarray | None:
        if self.mode == "memory":
            return self.memory.get(key)
        if self.mode != "disk":
            return None
        try:
            with open(self.entry_path(key), "rb") as f:
                return _read_entry(f)
        except (OSError, ValueError):  # absent, or torn by a crash: decode again and rewrite
            return None

    def put(self, key: str, arr: np.ndarray) -> None:
        if not self.writable:
            return
        if self.mode == "memory":
            self._put_memory(key, arr)
            return
        self.puts += 1
        if self.puts % _FREE_CHECK_EVERY == 1 and not self._room():
            return
        path = self.entry_path(key)
        tmp = path.with_name(f".{key}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, arr.shape[2], arr.shape[0], arr.shape[1]))
                f.write(np.ascontiguousarray(arr, dtype=np.uint8).data)
            os.replace(tmp, path)
        except OSError as e:
            self.writable = False
            self.note = f"stopped writing to {self.directory} ({e.strerror or e})"
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _room(self) -> bool:
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return True
        if free < MIN_FREE_BYTES:
            self.writable = False
            self.note = f"stopped adding to {self.directory}: less than {MIN_FREE_BYTES >> 30} GiB free on its disk"
        return self.writable

    def _put_memory(self, key: str, arr: np.ndarray) -> None:
        if self.memory_budget is None:
            self.memory_budget = memory_budget() // max(1, _loader_workers())
        if self.memory_bytes + arr.nbytes > self.memory_budget:
            if not self.note:
                self.note = f"the in-memory cache is full ({self.memory_budget >> 20} MiB in this process)"
            return
        self.memory[key] = arr
        self.memory_bytes += arr.nbytes


def _read_entry(f) -> np.ndarray:
    head = f.read(_HEADER.size)
    if len(head) != _HEADER.size:
        raise ValueError("short entry")
    magic, version, c, h, w = _HEADER.unpack(head)
    if magic != _MAGIC or version != _VERSION or c != 3 or not (0 < h < _MAX_SIDE and 0 < w < _MAX_SIDE):
        raise ValueError("not a cache entry")
    arr = np.empty((h, w, c), np.uint8)
    if f.readinto(memoryview(arr).cast("B")) != arr.nbytes or f.read(1):
        raise ValueError("entry size does not match its header")
    return arr


def memory_budget() -> int:
    """A quarter of the machine's physical memory (1 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _loader_workers() -> int:
    """How many loader processes share the memory budget (1 outside a DataLoader worker)."""
    import sys

    if "torch.utils.data" not in sys.modules:
        return 1
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return info.num_workers if info is not None else 1


# ---- what the folder holds ----------------------------------------------------------------------------------
@dataclass
class CacheInfo:
    directory: Path
    image_entries: int
    image_bytes: int
    scan_files: int
    scan_bytes: int
    graph_files: int = 0
    graph_bytes: int = 0
    kept: list = field(default_factory=list)  # folders --clear left: not marked as tlexport's

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "image_entries": self.image_entries,
                "image_bytes": self.image_bytes, "scan_files": self.scan_files, "scan_bytes": self.scan_bytes,
                "graph_files": self.graph_files, "graph_bytes": self.graph_bytes, "kept": list(self.kept)}


def cache_info(directory: Path | None = None) -> CacheInfo:
    """Entries and bytes of the image cache and of the remembered scans."""
    root = Path(directory or cache_dir())
    counts = {}
    for part in PARTS:
        n = size = 0
        if not is_marked(root / part):  # not ours: neither counted nor cleared
            counts[part] = (0, 0)
            continue
        for dirpath, _, files in os.walk(root / part):
            for name in files:
                if name == MARKER and dirpath == str(root / part):
                    continue
                with contextlib.suppress(OSError):
                    size += os.stat(os.path.join(dirpath, name)).st_size
                    n += 1
        counts[part] = (n, size)
    return CacheInfo(root, *counts["images"], *counts["scan"], *counts["graphs"])


def clear_cache(directory: Path | None = None) -> CacheInfo:
    """Remove the image cache, the remembered scans and the traced graphs; returns what was
    there. Only folders that carry tlexport's marker are removed (`CACHEDIR.TAG`): a folder that
    merely has the name (a user's `images/` beside a misplaced TLEXPORT_CACHE_DIR) is left alone
    and listed in the result's `kept`."""
    info = cache_info(directory)
    for part in PARTS:
        folder = info.directory / part
        if not folder.exists():
            continue
        if folder.is_symlink() or not is_marked(folder):
            info.kept.append(str(folder))
            continue
        shutil.rmtree(folder, ignore_errors=True)
    return info
