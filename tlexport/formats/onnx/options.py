"""The options of ONNX export, shared by the formats converted from its files: `--opset` and
`--target` choose the opset of every ONNX file staged for them (OpenVINO, ORT mobile, Triton,
web), and `--target` checks every file a targeted runtime reads (`.onnx`, `.ort`, `.tflite`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError
from ..options import option


@dataclass(frozen=True)
class OnnxOptions:
    """Args:
        opset: the ai.onnx opset (None: tlexport's default, `graph.DEFAULT_OPSET`, or what the
            targets read; resolved by `hooks.prepare` when any ONNX-based format is exported).
        targets: runtime releases the files must load in (`--target`, `targets.Target`; text
            such as "onnxruntime==1.17" is parsed when the options are made).
        fp16_io: fp16 ONNX takes and returns float16 instead of float32.
        bake_preprocess: also write model.uint8.onnx: one decoded uint8 RGB image of any size in,
            the whole preprocessing inside, logits and probabilities out.
    """

    opset: int | None = option(None, "ONNX opset (default: 18, which onnxruntime 1.14+, -web/-node and OpenCV load; "
                               "newer on request). docs/deploy.md.")
    targets: tuple = option(
        (), "A runtime release the files must load in, e.g. onnxruntime==1.17, onnxruntime-web==1.18, opencv==4.10, "
        "tflite-runtime==2.14; repeatable. Chooses opset and IR version and checks each file against tlexport's "
        "measured table (and loads it when that runtime is installed here); exit 1 naming what the release lacks.",
        flag="--target", keyword="targets", multiple=True, metavar="RUNTIME==VERSION")
    fp16_io: bool = option(False, "fp16 ONNX takes and returns float16 (default float32 I/O).")
    bake_preprocess: bool = option(
        False, "Also write model.uint8.onnx: one decoded RGB image (uint8 [H, W, 3], any size) in, logits and "
        "probabilities out; resize, crop and normalisation inside the graph.")

    def __post_init__(self):
        from .targets import parse_all  # torch-free; UsageError for a malformed or unknown release

        object.__setattr__(self, "targets", parse_all(self.targets))

    def check(self, formats) -> None:
        """UsageError for an option that no requested format honours."""
        if self.bake_preprocess and "onnx" not in formats:
            raise UsageError("--bake-preprocess makes an ONNX model: add --format onnx")
        from .. import registry
        from .compat import READS

        suffixes = {registry.get(f).suffix for f in formats}
        for t in self.targets:
            if not suffixes & set(READS[t.runtime]):
                raise UsageError(f"--target {t.text}: none of the formats exported makes a file {t.runtime} reads "
                                 f"({', '.join(READS[t.runtime])})")
