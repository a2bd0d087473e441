"""The options of ONNX export, shared by the formats converted from its files."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError


@dataclass(frozen=True)
class OnnxOptions:
    """Args:
        opset: the ai.onnx opset (None: the newest both torch's exporter and onnxruntime support;
            the pipeline resolves it when any ONNX-based format is exported).
        fp16_io: fp16 ONNX takes and returns float16 instead of float32.
        bake_preprocess: also write model.uint8.onnx (uint8 NHWC input, normalisation inside).
    """

    opset: int | None = None
    fp16_io: bool = False
    bake_preprocess: bool = False

    def check(self, formats) -> None:
        """UsageError for an option that no requested format honours."""
        if self.bake_preprocess and "onnx" not in formats:
            raise UsageError("--bake-preprocess makes an ONNX model: add --format onnx")
