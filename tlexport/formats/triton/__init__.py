"""A Triton Inference Server model repository (onnxruntime backend): the artifact is the ONNX
model inside it; config.pbtxt, the GPU config and the labels file travel as its companions."""

from ..onnx import INT8
from ..spec import File, FormatSpec, Requirement

REPO = "model_repository"


def _entry(precision: str, model: str) -> File:
    folder = f"{REPO}/{model}"
    return File(precision, f"{folder}/1/model.onnx",
                companions=(f"{folder}/config.pbtxt", f"{folder}/configs/gpu.pbtxt", f"{folder}/labels.txt"))


SPEC = FormatSpec(
    name="triton", package=__name__, suffix=".onnx", by_suffix=False, extra="triton", built_from="onnx",
    description="Triton model repository (onnxruntime backend)",
    files=(_entry("fp32", "classifier"), _entry("int8", "classifier_int8")),
    runtimes=(("onnxruntime", "cpu"), ("onnxruntime-cuda", "cuda")),
    needs=(Requirement("tritonclient", "pip install -e '.[triton]' (or pip install tritonclient==2.73.0)"),),
    int8=INT8,  # the repository's int8 model is the int8 ONNX file
)
