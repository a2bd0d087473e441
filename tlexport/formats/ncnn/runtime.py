"""ncnn's Python runtime (the `ncnn` wheel) on the CPU, for `model.ncnn/` folders. Torch-free.

ncnn has no batch dimension: each image of a batch is one extractor call. Its input name, and the
output (the blob no layer consumes), come from the folder's `model.param`; any image size runs
(the param's shape hints only steer ncnn's choice of kernels). Options are ncnn's defaults
(Winograd and im2col-GEMM convolutions, packed layouts), with fp16 storage and arithmetic for the
fp16 folder only: on ARM ncnn's defaults would compute an fp32 model in fp16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import RuntimeUnavailable
from ...runtimes.base import Runtime, cpu_package_reason
from . import PARAM, WEIGHTS
from .metadata import read_param

FP16_OPTIONS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")
FAST_OPTIONS = ("use_winograd_convolution", "use_sgemm_convolution", "use_packing_layout")


def option_values(precision: str, threads: int | None) -> dict:
    """The `ncnn.Option` fields tlexport sets for a file of `precision` (before loading it)."""
    values = {name: True for name in FAST_OPTIONS}
    values.update({name: precision == "fp16" for name in FP16_OPTIONS})
    values["use_bf16_storage"] = False
    if threads:
        values["num_threads"] = int(threads)
    return values


def load_net(folder: Path, precision: str, threads: int | None):
    """An `ncnn.Net` with the folder's graph and weights loaded, and its (input, output) names.

    Raises:
        RuntimeUnavailable: files missing, or a graph or weights ncnn refuses.
    """
    import ncnn

    folder = Path(folder)
    param, weights = folder / PARAM, folder / WEIGHTS
    for f in (param, weights):
        if not f.is_file():
            raise RuntimeUnavailable(f"{folder.name}: {f.name} is missing from the folder")
    graph = read_param(param)
    if not graph.inputs or len(graph.outputs) != 1:
        raise RuntimeUnavailable(f"{param}: ncnn graph with {len(graph.inputs)} inputs and outputs "
                                 f"{graph.outputs}, not one image in and logits out")
    net = ncnn.Net()
    for name, value in option_values(precision, threads).items():
        setattr(net.opt, name, value)
    if net.load_param(str(param)) != 0:
        unknown = sorted({layer.type for layer in graph.layers if "." in layer.type})
        raise RuntimeUnavailable(f"ncnn cannot load {param}" + (f": no ncnn layer for {', '.join(unknown)}" if unknown else ""))
    if net.load_model(str(weights)) != 0:
        raise RuntimeUnavailable(f"ncnn cannot load {weights} (truncated, or not the weights of {PARAM})")
    return net, graph.inputs[0].tops[0], graph.outputs[0]


def run_one(net, input_name: str, output_name: str, chw: np.ndarray) -> np.ndarray:
    """One CHW float32 image through `net`: its output as a flat float32 array."""
    import ncnn

    # ncnn.Mat wraps the array's memory without holding a reference: keep `image` alive until
    # the extractor has run.
    image = np.ascontiguousarray(chw, dtype=np.float32)
    ex = net.create_extractor()
    ex.input(input_name, ncnn.Mat(image))
    ret, out = ex.extract(output_name)
    if ret != 0:
        raise RuntimeUnavailable(f"ncnn could not compute {output_name} (extract returned {ret})")
    return np.array(out, dtype=np.float32).reshape(-1)


class NcnnRuntime(Runtime):
    """A `model.ncnn/` folder in ncnn, image by image, with `threads` ncnn threads."""

    name = "ncnn"

    @classmethod
    def unavailable_reason(cls, device, precision):
        return cpu_package_reason(device, "ncnn", "ncnn")

    def _load(self):
        self.check_available()
        if self.artifact is None or not self.artifact.is_dir():
            raise RuntimeUnavailable(f"{self.artifact} is not an ncnn folder")
        self.net, self._input, self._output = load_net(self.artifact, self.precision, self.threads)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        return np.stack([run_one(self.net, self._input, self._output, image) for image in batch])

    def _release(self):
        if hasattr(self, "net"):
            self.net.clear()
            del self.net


RUNTIMES = (NcnnRuntime,)
