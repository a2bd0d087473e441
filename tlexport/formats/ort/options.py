"""The options of ONNX Runtime mobile (`.ort`) conversion."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError
from ..options import option

TARGETS = ("portable", "amd64")


@dataclass(frozen=True)
class OrtOptions:
    """Args:
        target: "portable" (default): the optimizations every CPU build of onnxruntime can load,
            ARM phones included. "amd64": also onnxruntime's x86 channel-blocked (NCHWc) layout,
            which a `.ort` file cannot apply at load: the fp32 file then runs as fast as the
            `.onnx` on x86, but the layout bakes in the exporting CPU's vector width (16
            channels with AVX-512, 8 with AVX2), so it loads only on x86 CPUs of that width.
    """

    target: str = option("portable", ".ort optimizations: portable (any CPU build of onnxruntime, ARM included) or "
                         "amd64 (also the x86 NCHWc layout, as fast as the .onnx on x86, but only for x86 CPUs of "
                         "this one's vector width).", flag="--ort-target", choices=TARGETS)

    def check(self, formats) -> None:
        """UsageError for an unknown target, or a target given without --format ort."""
        if self.target not in TARGETS:
            raise UsageError(f"--ort-target must be {' or '.join(TARGETS)}, not {self.target!r}")
        if self.target != "portable" and "ort" not in formats:
            raise UsageError("--ort-target applies to .ort files: add --format ort")
