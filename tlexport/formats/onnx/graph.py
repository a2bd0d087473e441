"""ONNX graphs: torch's dynamo exporter to one self-contained file, checked, with metadata, and
the small readers (opset, input/output spec) the other ONNX-based formats share: what every
ONNX-derived artifact starts from (fp16, int8, baked uint8, OpenVINO, ORT mobile, Triton)."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from pathlib import Path

from ... import progress as P
from ...errors import ExportError, UsageError, first_line, os_error
from . import graphcache
from .metadata import embed_onnx

# The dynamo exporter's torchlib implements opset 18 and newer; older requests would go through
# onnx's version converter, which fails on many graphs, so tlexport refuses them.
MIN_OPSET = 18
# The default opset: the exporter's own oldest, so no version conversion runs, and the one that
# every onnxruntime since 1.14 (and -web/-node of the same releases) and OpenCV's DNN load
# (docs/deploy.md; benchmarks/compat.py measures it). It is also the first with Resize's
# `antialias`, which the in-graph preprocessing needs. Newer opsets only on request (--opset,
# --target).
DEFAULT_OPSET = 18
# Element types newer than an IR version: a file holding them needs at least that IR.
TYPE_IR = {"FLOAT8E4M3FN": 9, "FLOAT8E4M3FNUZ": 9, "FLOAT8E5M2": 9, "FLOAT8E5M2FNUZ": 9,
           "UINT4": 10, "INT4": 10, "FLOAT4E2M1": 11}


@functools.lru_cache(maxsize=1)
def max_supported_opset() -> int:
    """Newest opset that both torch's ONNX exporter and the installed onnxruntime accept."""
    import onnx
    from onnx import TensorProto, helper
    from torch.onnx import _constants

    import onnxruntime as ort

    best = MIN_OPSET
    for v in range(MIN_OPSET, min(_constants.ONNX_MAX_OPSET, onnx.defs.onnx_opset_version()) + 1):
        # onnxruntime has no API for its newest opset: ask it to load a one-node model.
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", v)], ir_version=min_ir_for_opset(v))
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            break
        best = v
    return best


def resolve_opset(opset: int | None) -> int:
    """The opset to export with: `opset`, validated, or DEFAULT_OPSET.

    Raises:
        UsageError: the opset is older than 18 or newer than exporter/onnxruntime support.
    """
    if opset is None:
        return DEFAULT_OPSET
    newest = max_supported_opset()
    if not MIN_OPSET <= int(opset) <= newest:
        raise UsageError(f"--opset {opset} is not supported here: torch's exporter and onnxruntime "
                         f"both handle opsets {MIN_OPSET}..{newest}")
    return int(opset)


def min_ir_for_opset(opset: int) -> int:
    """The oldest IR version whose ONNX release defines ai.onnx `opset` (onnx's own table)."""
    from onnx.helper import VERSION_TABLE

    return min((ir for _, ir, op, *_ in VERSION_TABLE if op >= opset), default=VERSION_TABLE[-1][1])


def drop_unused_domains(proto) -> None:
    """Remove opset imports of domains no node uses. onnxruntime's quantizer imports every domain
    it knows (ai.onnx.ml 5, com.microsoft, ...), and a runtime refuses a file importing a version of
    a domain newer than its own even when no node of it is there (onnxruntime 1.17: ai.onnx.ml 4)."""
    used = {n.domain or "" for n in proto.graph.node} | {n.domain or "" for f in proto.functions for n in f.node}
    used |= {f.domain for f in proto.functions} | {""}
    keep = [o for o in proto.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)


def lowest_ir(proto) -> int:
    """The oldest IR version that can hold `proto`: what its ai.onnx opset and element types
    need. torch's exporter stamps the newest IR onnx knows, which older runtimes refuse
    ("Unsupported model IR version") although nothing in the file needs it."""
    from onnx import TensorProto

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    need = min_ir_for_opset(opset)
    types = {t.data_type for t in proto.graph.initializer}
    for v in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        types.add(v.type.tensor_type.elem_type)
    for t in types:
        need = max(need, TYPE_IR.get(TensorProto.DataType.Name(t) if t else "", 0))
    return min(need, proto.ir_version)


@contextlib.contextmanager
def quiet_exporter():
    """The dynamo exporter prints progress lines and warnings; keep stdout clean for --json."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(module, example, path: Path, *, opset: int, dynamic: bool, meta: dict, size: bool = False) -> None:
    """Export `module` (eval mode) to a single self-contained ONNX file with metadata.

    Args:
        module: nn.Module in eval mode taking one tensor.
        example: example input tensor (its batch size is the fixed batch when not dynamic).
        path: destination file (a temporary name; the caller moves it into place).
        opset: ai.onnx opset version.
        dynamic: leave the batch dimension free.
        meta: metadata dict (see tables.metadata.build_metadata).
        size: leave height and width free too (`--dynamic-size`).
    Raises:
        ExportError: the exporter failed or the graph fails its checks.
    """
    from ...exporters.job import dynamic_shapes as dims

    if module.training:
        raise ExportError("internal: the model must be in eval mode for export")
    dynamic_shapes = dims(dynamic, size)
    name = graphcache.key(module, example, opset=opset, dynamic_shapes=dynamic_shapes) if graphcache.enabled() else None
    proto = None
    if name and graphcache.has(name):
        with P.step("reading the traced graph from the cache"):
            proto = graphcache.get(name)
    if proto is None:
        with P.step("waiting for torch.onnx.export (dynamo)"):
            proto = _trace(module, example, opset, dynamic_shapes)
        if name:
            graphcache.put(name, proto)
    embed_onnx(proto, meta)
    save_checked(proto, path)


def _trace(module, example, opset: int, dynamic_shapes):
    """torch's dynamo exporter -> the checked onnx.ModelProto (no tlexport metadata yet)."""
    import torch

    try:
        with quiet_exporter():
            program = torch.onnx.export(
                module, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                input_names=["image"], output_names=["logits"], opset_version=opset, optimize=True)
    except Exception as e:
        raise ExportError(f"ONNX export failed ({first_line(e, 300)})") from None
    proto = program.model_proto
    check_graph(proto)
    return proto


def save_checked(proto, path: Path) -> None:
    """Save with weights embedded (no side .data file), stamped with the oldest IR version its
    content needs (`lowest_ir`), and run the full ONNX checker."""
    import onnx

    if proto.ByteSize() >= 2**31 - 1:
        raise ExportError("the model is over 2 GB, too large for a single-file ONNX export")
    drop_unused_domains(proto)
    proto.ir_version = lowest_ir(proto)
    try:
        onnx.save(proto, str(path), save_as_external_data=False)
    except OSError as e:  # full disk, file-size limit, read-only folder: one line naming the file
        with contextlib.suppress(OSError):
            Path(path).unlink()  # a half-written graph is no graph (and its error is not ours)
        raise os_error(e, path) from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported ONNX graph fails onnx.checker ({first_line(e, 300)})") from None


def check_graph(proto) -> None:
    """No training-mode BatchNormalization, no Dropout, the agreed input/output names.

    Raises:
        ExportError: naming the offending node.
    """
    for node in proto.graph.node:
        if node.op_type == "Dropout":
            raise ExportError(f"exported graph still holds a Dropout node ({node.name})")
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "training_mode" and attr.i:
                    raise ExportError(f"exported graph has a training-mode BatchNormalization ({node.name})")
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != ["image"] or outputs != ["logits"]:
        raise ExportError(f"unexpected graph signature: inputs {inputs}, outputs {outputs}")


def io_spec(path: Path) -> tuple[list[dict], list[dict]]:
    """[{"name", "dtype", "shape"}] of the graph inputs and outputs ("batch" for a free dim)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def spec(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                        "shape": shape})
        return out

    return spec(proto.graph.input), spec(proto.graph.output)


def opset_of(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_finite(module, example) -> None:
    """ExportError when the model's logits are NaN/Inf: a diverged run would otherwise fail later
    and obscurely (int8 calibration's "scale issue", fp16 overflow)."""
    import torch

    with torch.inference_mode():
        logits = module(example)
    if not torch.isfinite(logits).all():
        raise ExportError("the model's logits are not finite (NaN/Inf) on a test input: its weights are "
                          "broken (a diverged training run?); nothing was exported")
