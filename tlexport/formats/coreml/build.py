"""Core ML export with coremltools (runs on Linux too): `model.mlpackage` (fp32),
`model.fp16.mlpackage` (fp16 weights and compute) and `model.int8.mlpackage` (int8 weights).

The traced module takes 0-255 RGB pixels, subtracts mean x 255 and divides by std x 255 per
channel, runs the network and returns (softmax, logits): the image input carries no scale of its
own (`ImageType(scale=1)`), so the normalisation is the training one exactly. The classifier spec
turns the softmax into `classLabel` + `classLabel_probs`; the logits stay an output (`logits`).

int8 is coremltools' weight-only linear quantization (symmetric, per output channel) of the fp32
program: weights of 2048 elements and more become int8 (`constexpr_affine_dequantize`, iOS 16),
computed in fp32. The fp16 program is not quantized: coremltools 9 cannot convert an fp16
classifier with a second output for iOS 16, nor quantize one made for iOS 15.
"""

from __future__ import annotations

from ...errors import ExportError, first_line
from ...exporters.job import Artifact
from ...tables.metadata import to_json
from . import META_KEY, SPEC

PREVIEW_KEY = "com.apple.coreml.model.preview.type"  # Xcode's Preview tab for image classifiers
INT8_MIN_WEIGHTS = 2048  # coremltools' weight_threshold: smaller weights stay float


def pixel_classifier(job):
    """The network behind a pixels-in normalisation, returning (softmax, logits)."""
    import torch

    pre = job.run.preprocess

    class PixelClassifier(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

        def forward(self, pixels):
            logits = self.net((pixels - self.mean) / self.std)
            return torch.softmax(logits, dim=1), logits

    return PixelClassifier(job.model_on("cpu")).eval()


def trace(job):
    import warnings

    import torch

    crop = job.run.preprocess.crop
    pixels = torch.rand(1, 3, crop, crop, generator=torch.Generator().manual_seed(0)) * 255.0
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        return torch.jit.trace(pixel_classifier(job), pixels, check_trace=False)


def convert(traced, job, half: bool):
    """The ML Program of the traced module (fp16 compute when `half`), as a classifier."""
    import coremltools as ct

    crop = job.run.preprocess.crop
    image = ct.ImageType(name="image", shape=(1, 3, crop, crop), color_layout=ct.colorlayout.RGB, scale=1.0)
    model = ct.convert(traced, inputs=[image], classifier_config=ct.ClassifierConfig(list(job.run.classes)),
                       convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15,
                       compute_precision=ct.precision.FLOAT16 if half else ct.precision.FLOAT32)
    return _named_logits(model)


def _named_logits(model):
    """The classifier's one multi-array output renamed `logits` (fp16 programs name it after the
    cast coremltools adds)."""
    import coremltools as ct

    spec = model.get_spec()
    arrays = [o.name for o in spec.description.output if o.type.WhichOneof("Type") == "multiArrayType"]
    if arrays != ["logits"]:
        ct.utils.rename_feature(spec, arrays[0], "logits")
        model = ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)
    return model


def quantize_int8(model):
    import coremltools.optimize.coreml as cto

    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                     weight_threshold=INT8_MIN_WEIGHTS)
    return cto.linear_quantize_weights(model, config=cto.OptimizationConfig(global_config=op))


def describe(model, job, precision: str) -> None:
    """tlexport's metadata, Xcode's preview type and descriptions a person reads in Xcode."""
    pre = job.run.preprocess
    model.user_defined_metadata[META_KEY] = to_json(job.meta)
    model.user_defined_metadata[PREVIEW_KEY] = "imageClassifier"
    model.short_description = f"{job.run.arch} image classifier ({len(job.run.classes)} classes, {precision}), exported by tlexport"
    model.input_description["image"] = (f"RGB image, {pre.crop}x{pre.crop}: the centre crop after scaling the shorter "
                                        f"side to {pre.resize} px ({pre.interpolation}); normalised inside the model")
    model.output_description["classLabel"] = "the most likely class"
    model.output_description["classLabel_probs"] = "probability (softmax) of each class"
    model.output_description["logits"] = "raw scores, one per class"


def build(job, say) -> list[Artifact]:
    """The model.mlpackage of the precision it is handed (int8: the fp32 program's weights
    quantized)."""
    from ...runtimes.quiet import silenced

    precision = job.precision
    say("Core ML: tracing")
    traced = trace(job)
    say(f"Core ML {precision}")
    try:
        with silenced():  # coremltools' progress bars and its "cannot load on Linux" warnings
            if precision == "int8":
                model = quantize_int8(convert(traced, job, half=False))
            else:
                model = convert(traced, job, half=precision == "fp16")
            describe(model, job, precision)
            model.save(str(job.staging / SPEC.file(precision).name))
    except Exception as e:  # coremltools raises anything from its converter passes
        raise ExportError(f"Core ML {precision} conversion failed ({first_line(e, 300)})") from None
    return [Artifact(SPEC.file(precision).name, SPEC.name, precision, notes=_notes(precision, job),
                     int8=_int8_record(job) if precision == "int8" else None)]


def _notes(precision: str, job) -> list[str]:
    crop = job.run.preprocess.crop
    notes = [f"ML Program classifier, RGB image input {crop}x{crop} (0-255, mean/std inside), outputs classLabel, "
             "classLabel_probs (softmax) and logits; one image per prediction"]
    notes.append({"fp32": "fp32 weights and compute; iOS 15 / macOS 12",
                  "fp16": "fp16 weights and compute; iOS 15 / macOS 12",
                  "int8": f"int8 weights (linear symmetric, per output channel; weights under {INT8_MIN_WEIGHTS} "
                          "elements stay fp32), fp32 compute; iOS 16 / macOS 13"}[precision])
    return notes


def _int8_record(job) -> dict:
    policy = job.options.int8.policy(job.spec.int8_fallback)
    return {"fallback": policy if isinstance(policy, str) else "auto", "float_nodes": [],
            "calibration": {"method": "none (weight-only)", "images": 0, "source": None},
            "why": f"{SPEC.int8.why}; gated by export's verification where Core ML runs"}
