"""TorchScript: a traced, frozen module for LibTorch/C++ (`model.ts`; fp16 is traced on a GPU)."""

from ..spec import File, FormatSpec

SPEC = FormatSpec(
    name="torchscript", package=__name__, suffix=".ts", runs_code=True, in_all=True,
    description="TorchScript (traced, frozen) for LibTorch/C++",
    files=(File("fp32", "model.ts"), File("fp16", "model.fp16.ts", cuda_only=True)),
    runtimes=(("torchscript", "cpu"), ("torchscript", "cuda")),
    provides=("torchscript",),
)
