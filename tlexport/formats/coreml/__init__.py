"""Core ML: an ML Program package (`model.mlpackage/`, a folder) converted by coremltools from a
TorchScript trace of the network wrapped to take 0-255 RGB pixels and normalise inside, so the
model's input is an image (`ImageType`, RGB, crop x crop) and mean/std are exact per channel
(ImageType's own scale is one number for all channels). It is a classifier (`ClassifierConfig`):
Xcode's preview and Vision read the class labels and get `classLabel` and the probabilities
`classLabel_probs` (softmax); the logits are a third output, `logits`. tlexport's metadata is
the model's user-defined metadata `tlexport` (JSON).

Core ML runs only on Apple systems: elsewhere export records the file as not verified, with the
reason, and parity lists it as skipped; on macOS the `coreml` runtime runs it (CPU only) and it is
verified like every other format.
"""

from ..spec import File, FormatSpec, Int8Support, Requirement

META_KEY = "tlexport"  # user-defined metadata entry holding tlexport's JSON
NOT_HERE = "CoreML runs on macOS/iOS only"

INT8 = Int8Support(calib_methods=(), default_method="none: weight-only (linear symmetric, per output channel)",
                   per_layer=False, why="Core ML int8 is weight-only linear quantization: no activation ranges "
                                        "are calibrated and every large weight is int8")

USAGE = """\
Add `model.mlpackage` (or `model.fp16.mlpackage`, `model.int8.mlpackage`) to an Xcode project: Xcode
shows the class labels and previews images, and generates a class. With Vision, wrap it in
`VNCoreMLModel` and run a `VNCoreMLRequest`: its results are `VNClassificationObservation`s (label,
softmax confidence). The input is an RGB image of crop x crop pixels, normalisation inside the
model. Training scaled the shorter side to `preprocess.resize` and took the centre crop: Vision's
`.centerCrop` alone sees more of the image (the whole shorter side), so set the request's
`regionOfInterest` to the centre square of side crop/resize of the shorter side. The `logits`
output holds the raw scores. tlexport's metadata (classes, preprocessing) is the
model's user-defined metadata `tlexport` (`MLModel.modelDescription.metadata[.creatorDefinedKey]`).
fp32 and fp16 need iOS 15 / macOS 12, int8 (int8 weights, fp32 compute) iOS 16 / macOS 13. Swift
snippets: [ncnn-coreml.md](ncnn-coreml.md)."""

SPEC = FormatSpec(
    name="coreml", package=__name__, suffix=".mlpackage", folder=True, extra="coreml",
    description="Core ML ML Program (.mlpackage): an image classifier for Xcode and Vision (macOS, iOS)",
    files=(File("fp32", "model.mlpackage"), File("fp16", "model.fp16.mlpackage"), File("int8", "model.int8.mlpackage")),
    runtimes=(("coreml", "cpu"),),
    provides=("coreml",),
    needs=(Requirement("coremltools", "pip install -e '.[coreml]' (or pip install coremltools)"),),
    int8=INT8,
    usage=USAGE,
)
