"""Which runtime releases load which files: the facts of a file that decide it (`describe`), and
the table measured by benchmarks/compat.py (real older runtimes in throwaway environments, each
file compared with the newest runtime; benchmarks/results/compat-DATE.md). The manifest's
minimum versions (`oldest`) and `--target` (`targets.py`) read this table.

Torch-free; `onnx` is imported only to read `.onnx` files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# Features of a file that some runtime releases lack (see RELEASES' `lacks`).
QDQ = "QuantizeLinear/DequantizeLinear (int8 QDQ)"
ANTIALIAS = "Resize with antialias (opset 18)"
SHAPE_MATH = "shape arithmetic on a dynamic image (Shape, Where, Slice with computed bounds)"
UINT8_HWC = "a uint8 [H, W, 3] input"
REDUCE_AXES = "Reduce* with its axes as an input (opset 18)"
FP16 = "float16 tensors"
# The features of the files benchmarks/compat.py ran: a file with any other is not covered by the
# table, and its manifest entry says so instead of extrapolating.
MEASURED = (REDUCE_AXES, QDQ, ANTIALIAS, SHAPE_MATH, UINT8_HWC)
REDUCES = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")


def onnx_features(proto) -> list[str]:
    """The features of an ONNX graph that RELEASES' `lacks` may name."""
    ops = {n.op_type for n in proto.graph.node}
    out = []
    if any(n.op_type in REDUCES and len(n.input) > 1 and n.input[1] for n in proto.graph.node):
        out.append(REDUCE_AXES)  # a global average pool, exported at opset 18
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        out.append(QDQ)
    if any(n.op_type == "Resize" and any(a.name == "antialias" and a.i for a in n.attribute) for n in proto.graph.node):
        out.append(ANTIALIAS)
    if "Shape" in ops and "Where" in ops:
        out.append(SHAPE_MATH)
    if any(t.data_type == 10 for t in proto.graph.initializer):  # TensorProto.FLOAT16
        out.append(FP16)
    first = proto.graph.input[0].type.tensor_type
    if first.elem_type == 2 and len(first.shape.dim) == 3:  # TensorProto.UINT8
        out.append(UINT8_HWC)
    return out


def _flatbuffer_root(buf: bytes) -> tuple[int, int]:
    """(table offset, vtable offset) of a flatbuffer's root table."""
    table = struct.unpack_from("<I", buf, 0)[0]
    return table, table - struct.unpack_from("<i", buf, table)[0]


def _flatbuffer_field(buf: bytes, index: int) -> int | None:
    """The absolute offset of field `index` of the root table (None when absent)."""
    table, vtable = _flatbuffer_root(buf)
    size = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    off = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + off if off else None


def _mapped(path: Path, identifier: bytes):
    """The file memory-mapped (flatbuffers put the root table anywhere), or None when it does not
    carry `identifier`."""
    import mmap

    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return None
    return buf if len(buf) >= 8 and buf[4:8] == identifier else None


def ort_format_version(path: Path) -> str | None:
    """The ORT format version an `.ort` file is written in (its root table's `ort_version`
    string; onnxruntime releases read a set of them)."""
    buf = _mapped(path, b"ORTM")
    at = _flatbuffer_field(buf, 0) if buf is not None else None
    if at is None:
        return None
    start = at + struct.unpack_from("<I", buf, at)[0]
    length = struct.unpack_from("<I", buf, start)[0]
    return bytes(buf[start + 4 : start + 4 + min(length, 64)]).decode("ascii", "replace")


def tflite_schema_version(path: Path) -> int | None:
    buf = _mapped(path, b"TFL3")
    at = _flatbuffer_field(buf, 0) if buf is not None else None
    return struct.unpack_from("<I", buf, at)[0] if at is not None else None


def describe(path: Path) -> dict:
    """What decides which runtimes load a file: ONNX opset, IR version and features; the ORT
    format version of `.ort`; the schema version of `.tflite`."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return {"opset": opset, "ir": proto.ir_version, "features": onnx_features(proto)}
    if path.suffix == ".ort":
        return {"ort_format": ort_format_version(path)}
    if path.suffix == ".tflite":
        return {"tflite_schema": tflite_schema_version(path)}
    return {}


@dataclass(frozen=True)
class Release:
    """One runtime release as benchmarks/compat.py measured it.

    Args:
        runtime: onnxruntime, onnxruntime-node, onnxruntime-web, opencv or tflite-runtime.
        version: the release tested.
        opset: the newest ai.onnx opset it loads (None: it reads no ONNX files).
        ir: the newest IR version it loads.
        lacks: file features (`onnx_features`) it cannot load or run.
        ort_formats: the ORT format versions of `.ort` files it loads.
        tflite: it loads tlexport's `.tflite` files.
    """

    runtime: str
    version: str
    opset: int | None = None
    ir: int | None = None
    lacks: tuple[str, ...] = ()
    ort_formats: tuple[str, ...] = ()
    tflite: bool = False


# Which files each runtime reads (by suffix).
READS = {"onnxruntime": (".onnx", ".ort"), "onnxruntime-node": (".onnx", ".ort"), "onnxruntime-web": (".onnx", ".ort"),
         "opencv": (".onnx",), "tflite-runtime": (".tflite",)}


def lacking(release: Release, facts: dict) -> list[str]:
    """What a file (its `compat.describe` facts) needs that `release` lacks."""
    out = []
    if "opset" in facts:
        if release.opset is None:
            return [f"{release.runtime} reads no ONNX files"]
        if facts["opset"] > release.opset:
            out.append(f"opset {facts['opset']} (it reads up to {release.opset})")
        if facts["ir"] > release.ir:
            out.append(f"IR version {facts['ir']} (it reads up to {release.ir})")
        out += [f for f in facts["features"] if f in release.lacks]
    if "ort_format" in facts and facts["ort_format"] not in release.ort_formats:
        out.append(f"ORT format version {facts['ort_format']} (it reads {', '.join(release.ort_formats) or 'none'})")
    if "tflite_schema" in facts and release.runtime != "tflite-runtime":
        out.append(f"{release.runtime} reads no .tflite files")
    return out


RESULT = "benchmarks/results/compat-2026-12-01.json"  # the measurement the table below restates
# Generated by `python benchmarks/compat.py --table benchmarks/results/compat-2026-12-01.json`; sorted
# by runtime, then version (oldest first); tests/test_compat.py holds it equal to that result.
RELEASES: tuple[Release, ...] = (
    Release("onnxruntime", "1.15.1", 18, 9, (), (), False),
    Release("onnxruntime", "1.16.3", 19, 9, (), ("6",), False),
    Release("onnxruntime", "1.17.3", 20, 9, (), ("6",), False),
    Release("onnxruntime", "1.18.1", 21, 10, (), ("6",), False),
    Release("onnxruntime", "1.19.2", 21, 10, (), ("6",), False),
    Release("onnxruntime", "1.20.1", 21, 10, (), ("6",), False),
    Release("onnxruntime", "1.21.1", 22, 10, (), ("6",), False),
    Release("onnxruntime", "1.22.1", 22, 10, (), ("6",), False),
    Release("onnxruntime", "1.23.2", 23, 11, (), ("6",), False),
    Release("onnxruntime", "1.24.4", 25, 13, (), ("6",), False),
    Release("onnxruntime", "1.25.1", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.26.0", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.27.0", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.28.0", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.29.0", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.30.0", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.31.1", 26, 13, (), ("6",), False),
    Release("onnxruntime", "1.32.0", 28, 14, (), ("6",), False),
    Release("onnxruntime-node", "1.14.0", 18, 8, (), (), False),
    Release("onnxruntime-node", "1.15.1", 18, 9, (), (), False),
    Release("onnxruntime-node", "1.16.3", 19, 9, (), ("6",), False),
    Release("onnxruntime-node", "1.17.3", 20, 9, (), ("6",), False),
    Release("onnxruntime-node", "1.18.0", 21, 10, (), ("6",), False),
    Release("onnxruntime-node", "1.19.2", 21, 10, (), ("6",), False),
    Release("onnxruntime-node", "1.20.1", 21, 10, (), ("6",), False),
    Release("onnxruntime-node", "1.21.1", 22, 10, (), ("6",), False),
    Release("onnxruntime-node", "1.22.0", 22, 10, (), ("6",), False),
    Release("onnxruntime-node", "1.23.2", 23, 11, (), ("6",), False),
    Release("onnxruntime-node", "1.24.3", 25, 13, (), ("6",), False),
    Release("onnxruntime-node", "1.25.1", 26, 13, (), ("6",), False),
    Release("onnxruntime-node", "1.26.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-node", "1.27.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-node", "1.29.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-node", "1.30.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.14.0", 18, 8, (), (), False),
    Release("onnxruntime-web", "1.15.1", 18, 9, (), (), False),
    Release("onnxruntime-web", "1.16.3", 19, 9, (), ("6",), False),
    Release("onnxruntime-web", "1.17.3", 20, 9, (), ("6",), False),
    Release("onnxruntime-web", "1.18.0", 21, 10, (), ("6",), False),
    Release("onnxruntime-web", "1.19.2", 21, 10, (), ("6",), False),
    Release("onnxruntime-web", "1.20.1", 21, 10, (), ("6",), False),
    Release("onnxruntime-web", "1.21.1", 22, 10, (), ("6",), False),
    Release("onnxruntime-web", "1.22.0", 22, 10, (), ("6",), False),
    Release("onnxruntime-web", "1.23.2", 23, 11, (), ("6",), False),
    Release("onnxruntime-web", "1.24.3", 25, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.25.1", 26, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.26.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.27.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.29.0", 26, 13, (), ("6",), False),
    Release("onnxruntime-web", "1.30.0", 26, 13, (), ("6",), False),
    Release("opencv", "4.8.1", 18, 8, (QDQ, REDUCE_AXES, ANTIALIAS, UINT8_HWC, SHAPE_MATH), (), False),
    Release("opencv", "4.10.0", 18, 8, (ANTIALIAS, UINT8_HWC, SHAPE_MATH), (), False),
    Release("opencv", "4.14.0", 18, 8, (ANTIALIAS, UINT8_HWC, SHAPE_MATH), (), False),
    Release("opencv", "5.0.0", 18, 8, (QDQ, ANTIALIAS, UINT8_HWC, SHAPE_MATH), (), False),
    Release("tflite-runtime", "2.14.0", None, None, (), (), True),
)


def loads(release: Release, facts: dict) -> bool:
    """Whether `release` loads a file with these `describe` facts (per the measured table)."""
    if "tflite_schema" in facts:
        return release.tflite
    if "opset" in facts or "ort_format" in facts:
        return release.opset is not None and not lacking(release, facts)
    return False


def oldest(path: Path) -> dict:
    """{runtime: the oldest measured release that loads this file} for the runtimes that read its
    kind of file, plus where the table comes from: what the manifest records per artifact."""
    facts = describe(path)
    unmeasured = [f for f in facts.get("features", []) if f not in MEASURED]
    if unmeasured:
        return {"oldest": {}, "facts": facts, "source": RESULT,
                "note": f"not measured: benchmarks/compat.py ran no file with {', '.join(unmeasured)}"}
    out = {}
    for runtime in dict.fromkeys(r.runtime for r in RELEASES):  # RELEASES are sorted, oldest first
        if Path(path).suffix not in READS.get(runtime, ()):
            continue
        ok = [r.version for r in RELEASES if r.runtime == runtime and loads(r, facts)]
        out[runtime] = ok[0] if ok else None  # None: no measured release loads it
    return {"oldest": out, "facts": facts, "source": RESULT}
