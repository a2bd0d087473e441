"""Traced ONNX graphs kept in tlexport's cache folder (`graphs/`), so a second export of the same
weights (another format, another precision, the same command again) skips the dynamo trace: 5-30
CPU-seconds for the tested architectures.

An entry is the exporter's graph before tlexport's metadata goes in (labels and preprocessing are
embedded afresh every time), named by a hash of everything the trace depends on:

- the module: every parameter and buffer (names, dtypes, shapes, bytes), every submodule's
  name, class and own attributes (`stride`, `eps`, a wrapper's settings, its mode and hooks), and
  the code of each class's own methods (so an edited wrapper never meets a graph traced from the
  old one);
- the example input's shape, dtype and device; the opset; which dimensions are free;
- the versions of torch, onnx, onnxscript and tlexport, and ENTRY_VERSION.

Entries are written to a temporary name and renamed (concurrent exports never see half a file);
one that cannot be read is dropped and traced again. The folder keeps the newest MAX_ENTRIES
entries within MAX_BYTES, and nothing is added when the disk has under MIN_FREE_BYTES free. Every
failure of the cache is a miss: it never fails an export. `tlexport cache --clear` empties it;
TLEXPORT_GRAPH_CACHE=off turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import shutil
import threading
import types
from pathlib import Path

from ...data.cache import MIN_FREE_BYTES, cache_dir, digest_bytes, marked_dir

ENTRY_VERSION = 1
MAX_ENTRIES = 8
MAX_BYTES = 2 << 30
PART = "graphs"


def enabled() -> bool:
    return os.environ.get("TLEXPORT_GRAPH_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")


def key(module, example, *, opset: int, dynamic_shapes) -> str:
    """The entry name of the graph `torch.onnx.export` makes of `module` on `example` with these
    settings (see the module docstring for what goes in)."""
    import onnx
    import onnxscript
    import torch

    import tlexport

    h = hashlib.blake2b(digest_size=20)
    h.update(repr((ENTRY_VERSION, torch.__version__, onnx.__version__, onnxscript.__version__, tlexport.__version__,
                   tuple(example.shape), str(example.dtype), str(example.device), opset,
                   _value(dynamic_shapes))).encode())
    for name, sub in module.named_modules():
        cls = type(sub)
        h.update(f"\0{name}|{cls.__module__}.{cls.__qualname__}|{_value(_attributes(sub))}".encode())
        h.update(_class_code(cls))
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        h.update(f"\0{name}|".encode() + _tensor_bytes(tensor))
    return h.hexdigest()


def _tensor_bytes(tensor) -> bytes:
    import torch

    t = tensor.detach().to("cpu").contiguous()
    return f"{t.dtype}|{tuple(t.shape)}|".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _attributes(sub) -> dict:
    """A module's own state besides its parameters, buffers and children: plain attributes
    (`stride`, `eps`, a wrapper's `scale`), its mode and its hooks."""
    out = {}
    for k, v in vars(sub).items():
        if k in ("_parameters", "_buffers", "_modules"):
            continue
        # hook dicts are keyed by a process-wide counter: their functions, in order, are what counts
        out[k] = list(v.values()) if "hooks" in k and isinstance(v, dict) else v
    return out


def _value(value, depth: int = 0) -> str:
    """`value` as text that is the same in every process (no addresses, no hash order)."""
    import torch

    if depth > 6:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.dtype, torch.device)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[" + ",".join(_value(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{_value(k, depth + 1)}:{_value(v, depth + 1)}" for k, v in value.items())) + "}"
    if isinstance(value, (set, frozenset)):
        return "set(" + ",".join(sorted(_value(v, depth + 1) for v in value)) + ")"
    if isinstance(value, torch.Tensor):
        return digest_bytes(_tensor_bytes(value))
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    fn = getattr(value, "__func__", value)
    if isinstance(fn, types.FunctionType):
        return f"fn {fn.__module__}.{fn.__qualname__} {digest_bytes(_code_bytes(fn.__code__))}"
    if isinstance(value, functools.partial):
        return "partial(" + ",".join(_value(v, depth + 1) for v in (value.func, value.args, value.keywords)) + ")"
    cls = type(value)
    if hasattr(value, "__dict__"):
        inner = _value(vars(value), depth + 1)
    else:  # a repr naming an address differs in every process
        inner = "" if " at 0x" in repr(value) else repr(value)
    return f"{cls.__module__}.{cls.__qualname__}({inner})"


@functools.lru_cache(maxsize=None)
def _class_code(cls) -> bytes:
    """The code of the methods `cls` and its bases below nn.Module define (what a trace runs)."""
    import torch

    out = []
    for klass in cls.__mro__:
        if klass in (torch.nn.Module, object):
            break
        for name, value in sorted(vars(klass).items()):
            fn = getattr(value, "__func__", value)
            if isinstance(fn, types.FunctionType):
                out.append(f"{klass.__qualname__}.{name}".encode() + _code_bytes(fn.__code__))
    return b"\0".join(out)


def _code_bytes(code) -> bytes:
    """A code object as bytes that do not depend on the process (no addresses, no hash order)."""
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            parts.append(_code_bytes(c))
        elif isinstance(c, frozenset):
            parts.append(repr(sorted(map(repr, c))).encode())
        else:
            parts.append(repr(c).encode())
    return b"|".join(parts)


def folder() -> Path | None:
    """The cache's graphs/ folder (made and marked), or None when it cannot be used."""
    if not enabled():
        return None
    try:
        return marked_dir(cache_dir() / PART)
    except (OSError, ValueError):  # unwritable, or a folder of that name holding other files
        return None


def has(name: str) -> bool:
    where = folder()
    return where is not None and (where / f"{name}.onnx").is_file()


def get(name: str):
    """The cached onnx.ModelProto, or None (absent, unreadable: then dropped)."""
    import onnx

    where = folder()
    if where is None:
        return None
    path = where / f"{name}.onnx"
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file: trace again, and let the next put replace it
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: the last to go
    return proto


def put(name: str, proto) -> None:
    """Keep `proto` under `name` (best effort: a full disk or a read-only cache only skips it)."""
    import onnx

    where = folder()
    if where is None:
        return
    size = proto.ByteSize()
    tmp = where / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        if shutil.disk_usage(where).free < MIN_FREE_BYTES + size or size > MAX_BYTES:
            return
        onnx.save(proto, str(tmp), save_as_external_data=False)
        os.replace(tmp, where / f"{name}.onnx")
    except Exception:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return
    prune(where)


def prune(where: Path) -> None:
    """Drop the least recently used entries beyond MAX_ENTRIES or MAX_BYTES."""
    entries = []
    for p in where.glob("*.onnx"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime_ns, st.st_size, p))
    entries.sort(reverse=True)
    total = 0
    for i, (_, size, p) in enumerate(entries):
        total += size
        if i >= MAX_ENTRIES or total > MAX_BYTES:
            with contextlib.suppress(OSError):
                p.unlink()
