"""ncnn: a folder `model.ncnn/` holding `model.param` (the graph), `model.bin` (the weights) and
`metadata.json` (labels and preprocessing), converted by pnnx from a TorchScript trace.

A folder rather than a `.param` file with companions: ncnn has no metadata field, so a side file
must travel with the pair, and an app copies one folder into its assets and opens the same three
names whatever the precision (`model.fp16.ncnn/` holds `model.param` and `model.bin` too), the
way ncnn's own Android examples ship a param, a bin and a labels file side by side.

The graph carries ncnn's shape hints for the crop size (the input's w/h/c and every blob's shape,
as `ncnnoptimize` writes them): ncnn picks its Winograd variant per convolution from them at load
time. They are hints only: ncnn runs any image size, so the folder takes other sizes unchanged.

int8 is not offered: ncnn's quantization tools (`ncnn2table`, `ncnn2int8`) ship in neither the
`ncnn` nor the `pnnx` wheel, and no package on the registries provides them.
"""

from ..spec import File, FormatSpec, Requirement

PARAM, WEIGHTS, META = "model.param", "model.bin", "metadata.json"  # inside every model.*.ncnn folder

USAGE = """\
Copy the folder (`model.ncnn/`, or `model.fp16.ncnn/` for half-size weights) into the app; it holds
`model.param`, `model.bin` and `metadata.json`. Load the pair with `ncnn::Net::load_param` and
`load_model` (on Android, from the `AAssetManager`). Per image: scale the shorter side to
`preprocess.resize` and take the centre `crop` x `crop` square (`ncnn::Mat::from_pixels_roi_resize`
does both from RGB pixels), then `substract_mean_normalize` with mean x 255 and 1 / (std x 255), feed
it under the name of the param's `Input` layer (`in0`) and extract `out0`: one logit per name of
`metadata.json`'s `classes`. There is no batch dimension; threads are `net.opt.num_threads`. For the
fp32 folder switch off `use_fp16_storage`, `use_fp16_packed` and `use_fp16_arithmetic` (on ARM
ncnn's defaults compute in fp16); the fp16 folder keeps the defaults. Any image size runs. C++,
Android and Python snippets: [ncnn-coreml.md](ncnn-coreml.md)."""

SPEC = FormatSpec(
    name="ncnn", package=__name__, suffix=".ncnn", folder=True, extra="ncnn",
    description="ncnn folder: model.param + model.bin from pnnx, metadata.json beside (Android, iOS, embedded Linux)",
    files=(File("fp32", "model.ncnn"), File("fp16", "model.fp16.ncnn")),
    runtimes=(("ncnn", "cpu"),),
    provides=("ncnn",),
    needs=(Requirement("pnnx", "pip install -e '.[ncnn]' (or pip install pnnx ncnn)"),
           Requirement("ncnn", "pip install -e '.[ncnn]' (or pip install ncnn)")),
    not_offered=(("int8", "ncnn's quantization tools ncnn2table and ncnn2int8 are in neither the ncnn nor the "
                          "pnnx wheel, and no registry package provides them"),),
    usage=USAGE,
    dynamic_size=True,  # shape hints steer the Winograd choice only; any size runs (verified)
)
