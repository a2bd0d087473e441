"""What an ncnn folder says without running it: the metadata in its `metadata.json`, and the graph
of its `model.param` (layers, input names and shape hints, outputs), read with the standard library.

The param format (ncnn's docs, "param and model file structure"): a magic line `7767517`, a line
`<layer count> <blob count>`, then one line per layer: `type name bottom_count top_count
bottoms... tops... id=value...`, where an array value is written `-(23300+id)=n,v1,...,vn`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import UsageError
from ...fileio import parse_json, read_capped
from . import META

MAGIC = "7767517"
MAX_META_BYTES = 64 << 20  # 100k class names of up to 1000 characters fit; a larger file is not ours
MAX_PARAM_BYTES = 32 << 20
SHAPE_HINTS = "-23330"  # the array form of param id 30: per top blob dims,w,h,d,c


@dataclass(frozen=True)
class Layer:
    """One line of a param file; `params` keeps its `id=value` fields verbatim and in order."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: tuple[str, ...] = ()

    def param(self, key: str) -> str | None:
        return next((p.split("=", 1)[1] for p in self.params if p.split("=", 1)[0] == key), None)

    def with_params(self, values: dict[str, str]) -> "Layer":
        """This layer with the fields `values` set (replacing those it had), others kept."""
        kept = [p for p in self.params if p.split("=", 1)[0] not in values]
        return replace(self, params=tuple(kept + [f"{k}={v}" for k, v in values.items()]))

    def line(self) -> str:
        return " ".join([self.type, self.name, str(len(self.bottoms)), str(len(self.tops)),
                         *self.bottoms, *self.tops, *self.params])


@dataclass(frozen=True)
class Graph:
    layers: tuple[Layer, ...]

    @property
    def blobs(self) -> list[str]:
        return list(dict.fromkeys(t for layer in self.layers for t in layer.tops))

    @property
    def inputs(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.type == "Input"]

    @property
    def outputs(self) -> list[str]:
        """Blobs no layer consumes: what the graph produces."""
        used = {b for layer in self.layers for b in layer.bottoms}
        return [b for b in self.blobs if b not in used]

    def input_shape(self) -> tuple[int, int, int] | None:
        """(c, h, w) of the first Input layer's shape fields, None when it declares none."""
        if not self.inputs:
            return None
        w, h, c = (int(self.inputs[0].param(k) or 0) for k in ("0", "1", "2"))
        return (c, h, w) if w and h and c else None

    def text(self) -> str:
        return "\n".join([MAGIC, f"{len(self.layers)} {len(self.blobs)}", *(layer.line() for layer in self.layers)]) + "\n"


def read_param(path: Path) -> Graph:
    """The graph of a text `.param` file.

    Raises:
        UsageError: unreadable, too large, or not an ncnn text param file.
    """
    text = _bounded_text(path, MAX_PARAM_BYTES)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        if lines[0].strip() != MAGIC:
            raise ValueError(f"magic {lines[0].strip()[:20]!r} is not {MAGIC}")
        count = int(lines[1].split()[0])
        layers = tuple(_layer(ln) for ln in lines[2:2 + count])
        if len(layers) != count:
            raise ValueError(f"{count} layers announced, {len(layers)} found")
    except (IndexError, ValueError) as e:
        raise UsageError(f"{path} is not an ncnn param file ({e})") from None
    return Graph(layers)


def _layer(line: str) -> Layer:
    fields = line.split()
    n_bottom, n_top = int(fields[2]), int(fields[3])
    blobs = fields[4:4 + n_bottom + n_top]
    if len(blobs) != n_bottom + n_top:
        raise ValueError(f"layer {fields[1]} lists fewer blobs than it counts")
    return Layer(fields[0], fields[1], tuple(blobs[:n_bottom]), tuple(blobs[n_bottom:]),
                 tuple(fields[4 + n_bottom + n_top:]))


def read(path: Path) -> dict:
    """The JSON object of the folder's metadata.json ({} when there is none).

    Raises:
        UsageError: a metadata file that is unreadable, too large or not JSON.
    """
    meta_file = Path(path) / META
    if not meta_file.is_file():
        return {}
    meta = parse_json(read_capped(meta_file, MAX_META_BYTES, UsageError), meta_file, MAX_META_BYTES, UsageError)
    return meta if isinstance(meta, dict) else {}


def _bounded_text(path: Path, limit: int) -> str:
    try:
        return read_capped(path, limit, UsageError).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
