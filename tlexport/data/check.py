"""The validity scan: every file decoded once to find the broken ones, in parallel processes,
with progress, and remembered between runs.

A file is checked by reading its bytes (hashed: the image cache's key), reading its header (the
decompression-bomb bound and the caller's size bound, before any decoding) and decoding it; a
JPEG at the smallest DCT scale, which still entropy-decodes every byte of it, so truncated and
corrupt files show as they would at full size, at a fraction of the work.

The verdict is remembered in the cache folder (`cache.cache_dir()/scan/`), one file per data
folder: relative path -> (size, mtime_ns, ctime_ns, width, height, status, reason, digest). A
second run, or a resume, only stats the files and decodes those that changed or are new. What
the caller's size bound refused is remembered as "refused" (never decoded) and judged again
with the bound of the next call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TlexportError
from ..fileio import read_json
from ..procs import die_with_parent, fork_safe, pool_context
from .cache import cache_dir, digest_bytes, file_identity, marked_dir
from .images import BadImage, open_rgb

Sample = tuple[Path, int]
FORMAT, FORMAT_VERSION = "tlexport-scan", 1
MAX_MEMORY_BYTES = 512 << 20  # a remembered scan of a million files is ~150 MB
MAX_ROWS = 4_000_000
POOL_MIN = 64  # fewer files than this are checked in this process (a pool costs more to start)
READ_WHOLE = 256 << 20  # bigger files are hashed in chunks and decoded from the path
_STATUSES = ("ok", "bad", "refused")


# ---- remembered verdicts ----------------------------------------------------------------------------
class ScanMemory:
    """The remembered verdicts of one data folder (see the module docstring). Use as a context
    manager: what was checked is saved on the way out, an interruption included."""

    def __init__(self, root: Path | str, enabled: bool = True):
        given = Path(root).expanduser()
        self.root = given.resolve()
        # the samples' paths start with the root as given: names by prefix, no resolve() per file
        self.prefixes = tuple(dict.fromkeys(os.path.join(str(p), "") for p in (given, self.root)))
        name = hashlib.blake2b(str(self.root).encode(), digest_size=12).hexdigest()
        self.path = cache_dir() / "scan" / f"{name}.json"
        self.enabled, self.rows, self.changed = enabled, {}, False
        if enabled:
            self.rows = self._load()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.save()
        return False

    def _name(self, path: Path) -> str:
        text = str(path)
        for prefix in self.prefixes:
            if text.startswith(prefix):
                return Path(text[len(prefix):]).as_posix()
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    def _load(self) -> dict:
        """The stored rows, each validated; a missing, oversized or malformed file is no memory."""
        try:
            doc = read_json(self.path, MAX_MEMORY_BYTES, TlexportError)
        except TlexportError:
            return {}
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") == FORMAT_VERSION
                and doc.get("root") == str(self.root) and isinstance(doc.get("files"), dict)):
            return {}
        return {k: tuple(v) for k, v in list(doc["files"].items())[:MAX_ROWS] if isinstance(k, str) and _valid_row(v)}

    def lookup(self, path: Path, ident: tuple) -> tuple | None:
        row = self.rows.get(self._name(path))
        return row if row is not None and tuple(row[:3]) == tuple(ident) else None

    def record(self, path: Path, row: tuple) -> None:
        if self.enabled:
            self.rows[self._name(path)] = tuple(row)
            self.changed = True

    def save(self) -> None:
        """Write the rows atomically (a unique temporary name per writer, then a rename: ranks
        scanning the same folder at once each leave a whole file). A cache folder that cannot be
        written only means the next scan decodes again."""
        if not (self.enabled and self.changed):
            return
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "root": str(self.root),
               "files": {k: list(v) for k, v in self.rows.items()}}
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            marked_dir(self.path.parent)
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
            self.changed = False
        except (OSError, ValueError):  # ValueError: a scan/ folder that is not tlexport's
            with contextlib.suppress(OSError):
                tmp.unlink()


def _valid_row(v) -> bool:
    if not (isinstance(v, list) and len(v) == 8):
        return False
    size, mtime, ctime, w, h, status, reason, digest = v
    ints = all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (size, mtime, ctime, w, h))
    return (ints and status in _STATUSES and (reason is None or (isinstance(reason, str) and len(reason) <= 1000))
            and (digest is None or (isinstance(digest, str) and len(digest) == 32)))


# ---- checking ------------------------------------------------------------------------------------------
@dataclass
class Checked:
    """good samples, (path, reason) of the bad ones, {str(path): (size, mtime_ns, ctime_ns,
    digest)} of the good ones, and how many verdicts came from memory."""

    good: list[Sample]
    bad: list[tuple[Path, str]]
    digests: dict = field(default_factory=dict)
    remembered: int = 0


def check(samples: list[Sample], check_size=None, *, memory: ScanMemory | None = None, progress=None,
          workers: int | None = None) -> Checked:
    """Decode every file not remembered (in parallel) and sort the samples into good and bad.

    Args:
        check_size: optional callable(width, height) raising BadImage (`Preprocess.check_size`).
        memory: remembered verdicts to use and extend.
        progress: optional callable(done, total) over the files that need decoding; called with
            (0, total) first, then as they finish.
        workers: processes (default: the CPUs this process may use).
    """
    rows: list[tuple | None] = [None] * len(samples)
    todo, remembered = [], 0
    for i, (path, _) in enumerate(samples):
        try:
            row = memory.lookup(path, file_identity(path)) if memory is not None else None
        except OSError as e:  # vanished or unreadable since it was listed
            row = _unreadable(e)
        if row is not None and _judge(row, check_size) != _DECODE:
            rows[i], remembered = row, remembered + (row[5] != "unreadable")
        else:
            todo.append(i)
    for i, row in _probe_all([str(samples[i][0]) for i in todo], check_size, progress, workers, todo):
        rows[i] = row
        if memory is not None and row[5] != "unreadable":
            memory.record(samples[i][0], row)
    out = Checked([], [], remembered=remembered)
    for sample, row in zip(samples, rows):
        reason = _judge(row, check_size)
        if reason is None:
            out.good.append(sample)
            if row[7]:
                out.digests[str(sample[0])] = (*row[:3], row[7])
        else:
            out.bad.append((sample[0], reason))
    return out


def check_files(samples: list[Sample], workers: int | None = None, check_size=None, *, memory=None,
                progress=None) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """(good samples, (path, reason) of the bad ones): `check` without the digests."""
    done = check(samples, check_size, memory=memory, progress=progress, workers=workers)
    return done.good, done.bad


_DECODE = object()  # _judge: remembered as refused by a bound the current one accepts


def _judge(row: tuple, check_size):
    """None (good), the reason it is skipped, or _DECODE."""
    status, reason, (w, h) = row[5], row[6], row[3:5]
    if status in ("bad", "unreadable"):
        return reason
    if check_size is not None:
        try:
            check_size(w, h)
        except BadImage as e:
            return str(e)
    return _DECODE if status == "refused" else None


def _unreadable(e: OSError) -> tuple:
    return (0, 0, 0, 0, 0, "unreadable", f"cannot read ({e.strerror or type(e).__name__})", None)


def probe(path: str, check_size=None) -> tuple:
    """One file's row: (size, mtime_ns, ctime_ns, width, height, status, reason, digest)."""
    try:
        ident = file_identity(path)
        if ident[0] <= READ_WHOLE:
            with open(path, "rb") as f:
                source = f.read()
            digest = digest_bytes(source)
        else:
            source, digest = path, _digest_file(path)
    except OSError as e:
        return _unreadable(e)
    seen = {}

    def header(w, h):
        seen["size"] = (w, h)
        if check_size is not None:
            try:
                check_size(w, h)
            except BadImage:
                seen["refused"] = True
                raise

    try:
        open_rgb(source, min_side=1, check_size=header)  # the smallest DCT scale: see the docstring
        status, reason = "ok", None
    except BadImage as e:
        status, reason = ("refused", None) if seen.get("refused") else ("bad", str(e))
    w, h = seen.get("size", (0, 0))
    return (*ident, w, h, status, reason, digest)


def _digest_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _probe_chunk(paths: list[str], check_size) -> list[tuple]:
    return [probe(p, check_size) for p in paths]


def _probe_all(paths: list[str], check_size, progress, workers, index: list[int]):
    """Yield (index[i], row) for every path, in completion order, from a bounded pool."""
    if not paths:
        return
    if progress is not None:
        progress(0, len(paths))
    workers = workers or available_cpus()
    pool = _pool(len(paths), workers, check_size)
    if pool is None:
        for done, (i, p) in enumerate(zip(index, paths), 1):
            yield i, probe(p, check_size)
            if progress is not None:
                progress(done, len(paths))
        return
    chunk = max(1, min(256, math.ceil(len(paths) / (workers * 8))))
    starts, pending, done = iter(range(0, len(paths), chunk)), {}, 0
    try:
        while True:
            while len(pending) < workers * 2 and (s := next(starts, None)) is not None:
                pending[pool.submit(_probe_chunk, paths[s : s + chunk], check_size)] = s
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                s = pending.pop(fut)
                rows = fut.result()
                yield from zip(index[s : s + len(rows)], rows)
                done += len(rows)
                if progress is not None:
                    progress(done, len(paths))
    except BaseException:  # Ctrl-C, SIGTERM, an error: worker processes stop now, a stuck read included
        for proc in list((getattr(pool, "_processes", None) or {}).values()):  # process pools only
            proc.terminate()
        raise
    finally:  # interrupted too: what has not started never starts; what finished is kept
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(n: int, workers: int, check_size):
    """Processes where they can be forked safely (Linux, no other Python thread running in this
    one: as torch's DataLoader forks its workers) and the size check travels to them; threads
    otherwise (Pillow decodes without the GIL); None when the work is too small for either.
    Forking, unlike spawning, does not import the caller's main module again."""
    if workers <= 1 or n < POOL_MIN:
        return None
    if sys.platform.startswith("linux") and fork_safe() and _picklable(check_size):
        # workers die with us (SIGKILL included); forked only while no library thread exists
        return ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=die_with_parent)
    return ThreadPoolExecutor(workers)


def _picklable(obj) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
        return True
    except Exception:  # lambdas, closures, local classes: whatever pickle refuses
        return False


def available_cpus() -> int:
    """The CPUs this process may use, shared with the other ranks of a torchrun job on this
    machine (LOCAL_WORLD_SIZE; each scans too), at most 32."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, min(32, cpus // ranks))
