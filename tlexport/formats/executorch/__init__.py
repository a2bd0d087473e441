"""ExecuTorch: a `.pte` program on the XNNPACK delegate (phones, boards). A .pte is a flatbuffer of
operator calls and constant data: loading it deserialises data and calls kernels registered in
the runtime, nothing from the file runs as Python, so it does not `runs_code`."""

from ..spec import File, FormatSpec, Int8Support, Requirement

# ExecuTorch's wheel declares heavy dependencies it does not need to export or run (coremltools,
# pandas, scikit-learn, hydra): it is installed on its own, without them.
EXECUTORCH_PIP = "pip install --no-deps executorch==1.5.1 && pip install -e '.[executorch]'"

SPEC = FormatSpec(
    name="executorch", package=__name__, suffix=".pte", extra="executorch",
    description="ExecuTorch program, XNNPACK delegate (phones, boards)",
    files=(File("fp32", "model.pte"), File("int8", "model.int8.pte")),
    runtimes=(("executorch", "cpu"),),
    provides=("executorch",),
    needs=(Requirement("executorch", EXECUTORCH_PIP), Requirement("torchao", "pip install -e '.[executorch]'"),
           Requirement("ruamel", "pip install -e '.[executorch]'")),
    int8=Int8Support(calib_methods=("minmax",), default_method="histogram (the XNNPACK quantizer's observer)",
                     per_layer=True, why="PT2E observers offer min/max or the quantizer's histogram only"),
)
