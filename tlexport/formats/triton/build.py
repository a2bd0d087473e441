"""A Triton Inference Server model repository around the ONNX model (onnxruntime backend):

    model_repository/classifier/config.pbtxt        CPU instance (runs anywhere)
    model_repository/classifier/configs/gpu.pbtxt   GPU instance (tritonserver --model-config-name=gpu)
    model_repository/classifier/labels.txt          class names, one per line (classification extension)
    model_repository/classifier/1/model.onnx        the same ONNX file as --format onnx, metadata inside
    model_repository/classifier_int8/...            the same for int8

The configs are built and checked with Triton's own ModelConfig protobuf (from tritonclient):
they must parse and their input/output must match the ONNX graph's names, dtypes and shapes.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from pathlib import Path

from ...errors import ExportError, UsageError, first_line
from ...exporters.job import Artifact
from ...fileio import write_text
from ...tables.extras import not_installed
from ..onnx.graph import io_spec
from ..onnx.stage import stage

MAX_BATCH = 64  # Triton's dynamic batcher joins requests up to this batch
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}


@functools.lru_cache(maxsize=1)
def model_config_pb2():
    """Triton's model_config_pb2. `tritonclient.grpc`'s package __init__ needs grpcio (the
    [grpc] extra, which caps protobuf below 7); the generated module itself needs only protobuf,
    so it is loaded from its file."""
    try:
        import tritonclient
    except ImportError:
        raise UsageError(not_installed("tritonclient", "reading Triton configs")) from None
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("tlexport_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config(name: str, inputs: list[dict], outputs: list[dict], gpu: bool):
    """ModelConfig for an ONNX classifier with `inputs`/`outputs` from `onnx.io_spec`: a free
    batch dimension becomes max_batch_size with dynamic batching; a fixed one stays in dims."""
    mc = model_config_pb2()
    free = isinstance(inputs[0]["shape"][0], str)

    def dims(shape):
        return [int(d) for d in (shape[1:] if free else shape)]

    cfg = mc.ModelConfig(
        name=name, platform="onnxruntime_onnx", max_batch_size=MAX_BATCH if free else 0,
        input=[mc.ModelInput(name=i["name"], data_type=mc.DataType.Value(_DTYPES[i["dtype"]]),
                             format=mc.ModelInput.FORMAT_NCHW, dims=dims(i["shape"])) for i in inputs],
        output=[mc.ModelOutput(name=o["name"], data_type=mc.DataType.Value(_DTYPES[o["dtype"]]),
                               dims=dims(o["shape"]), label_filename="labels.txt") for o in outputs],
        instance_group=[mc.ModelInstanceGroup(
            kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    if free:
        cfg.dynamic_batching.max_queue_delay_microseconds = 100
    return cfg


def check_config(path: Path, onnx_path: Path):
    """Parse `path` with Triton's ModelConfig and compare it with the ONNX graph.

    Returns:
        the parsed ModelConfig.
    Raises:
        ExportError: it does not parse, or names/dtypes/dims/labels disagree with the model.
    """
    from google.protobuf import text_format

    mc = model_config_pb2()
    try:
        cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"{path} does not parse as a Triton ModelConfig ({first_line(e)})") from None
    inputs, outputs = io_spec(onnx_path)
    want = model_config(cfg.name, inputs, outputs, gpu=False)
    for field in ("platform", "max_batch_size", "input", "output"):
        if getattr(cfg, field) != getattr(want, field):
            raise ExportError(f"{path}: {field} does not match {onnx_path.name} ({getattr(cfg, field)!r})")
    if cfg.name != path.parent.name and cfg.name != path.parent.parent.name:
        raise ExportError(f"{path}: model name {cfg.name!r} is not its folder's name")
    return cfg


def build(job, say) -> list[Artifact]:
    """The repository entry of the precision it is handed (fp32 -> classifier, int8 -> classifier_int8)."""
    from google.protobuf import text_format

    from ..files import kind

    precision = job.precision
    source = stage(job, precision, say)
    row = kind("triton", precision)
    say(f"Triton repository {precision}")
    model = job.staging / row.file
    folder = model.parent.parent
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.path, model)
    inputs, outputs = io_spec(model)
    cpu, gpu, labels = (job.staging / e for e in row.companions)
    gpu.parent.mkdir(parents=True, exist_ok=True)
    write_text(cpu, text_format.MessageToString(model_config(folder.name, inputs, outputs, gpu=False)))
    write_text(gpu, text_format.MessageToString(model_config(folder.name, inputs, outputs, gpu=True)))
    write_text(labels, "".join(f"{c}\n" for c in job.run.classes))  # one per line: no control chars (scan)
    for cfg in (cpu, gpu):
        check_config(cfg, model)
    return [Artifact(row.file, "triton", precision, int8=source.int8, notes=[
        f"Triton model {folder.name!r} (onnxruntime_onnx, {source.path.name}); config.pbtxt: CPU instance, "
        "configs/gpu.pbtxt: GPU instance (--model-config-name=gpu); parsed with Triton's ModelConfig"])]
