"""The options of ONNX export, shared by the formats converted from its files."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError


@dataclass(frozen=True)
class OnnxOptions:
    """Args:
        opset: the ai.onnx opset (None: tlexport's default, `graph.DEFAULT_OPSET`, or what the
            targets read; the pipeline resolves it when any ONNX-based format is exported).
        fp16_io: fp16 ONNX takes and returns float16 instead of float32.
        bake_preprocess: also write model.uint8.onnx: one decoded uint8 RGB image of any size in,
            the whole preprocessing inside, logits and probabilities out.
        targets: runtime releases the files must load in (`--target`, `targets.Target`).
    """

    opset: int | None = None
    fp16_io: bool = False
    bake_preprocess: bool = False
    targets: tuple = ()

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
