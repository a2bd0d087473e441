"""A bounded JSON reader: a size cap before anything is read, a depth cap after parsing (and
no RecursionError from a file of a hundred thousand `[`), one error type with one line."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TlexportError, first_line

MAX_DEPTH = 32


def read_json(path: Path, max_bytes: int, error: type[TlexportError] = TlexportError,
              max_depth: int = MAX_DEPTH):
    """The parsed content of `path`.

    Raises:
        `error`: the file is missing, unreadable, over `max_bytes`, not JSON, or nested more than
            `max_depth` levels; the message names the file and the problem.
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is too large ({size} bytes; at most {max_bytes} are read)")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or first_line(e)})") from None
    if len(data) > max_bytes:  # it grew since stat()
        raise error(f"{path} is too large (more than {max_bytes} bytes)")
    try:
        obj = json.loads(data)
    except RecursionError:
        raise error(f"{path} is nested too deeply (more than {max_depth} levels)") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path} is not valid JSON ({first_line(e)})") from None
    if depth(obj, max_depth) > max_depth:
        raise error(f"{path} is nested too deeply (more than {max_depth} levels)")
    return obj


def depth(obj, limit: int) -> int:
    """Nesting depth of lists and dicts (a scalar: 0), counted up to `limit` + 1 at most."""
    deepest, stack = 0, [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
