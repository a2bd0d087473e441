"""What the export pipeline hands each format's builder (`Job`) and what a builder returns
(`Artifact` rows for manifest.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Artifact:
    """One exported file, as recorded in manifest.json.

    `devices` are the devices the file is meant to run on (and is verified on where present).
    `companions` are the other files that belong to it ([{"file": relative path, "size", "sha256"}];
    the pipeline fills them in from the artifact table, or from what the builder listed): OpenVINO's
    .bin, ORT's operator config, a Triton model's config.pbtxt and labels.
    """

    file: str
    format: str
    precision: str
    role: str = "model"  # "model" | "baked-preprocess" (uint8 NHWC input)
    size: int = 0
    sha256: str = ""
    opset: int | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    device: str = "cpu"
    devices: list = field(default_factory=lambda: ["cpu", "cuda"])
    notes: list = field(default_factory=list)
    verified: bool | None = None
    verification: dict | None = None
    int8: dict | None = None  # int8 only: which nodes stayed float, agreement reached, on which images
    companions: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Job:
    """Everything a format builder needs.

    Args:
        run: the `tlexport.models.Run` being exported.
        model: its eval-mode float32 model on the CPU; builders copy it, never change it.
        meta: the metadata embedded in every artifact.
        example: float32 NCHW example input on the CPU (batch 2 when dynamic).
        dynamic: the batch dimension stays free.
        device: the device the user asked to trace on ("cpu" | "cuda").
        opset: ONNX opset (None when no ONNX is made).
        staging: the private folder builders write into.
        precisions: the precisions asked for.
        options: format options (calibration, fp16 I/O, baked preprocessing).
        spec: the run's ArchSpec row.
    """

    run: object
    model: object
    meta: dict
    example: object
    dynamic: bool
    device: str
    opset: int | None
    staging: Path
    precisions: tuple
    options: dict
    spec: object

    def model_on(self, device: str, half: bool = False):
        """A private copy of the model on `device` (fp16 when `half`): builders never modify the
        shared model, so one precision cannot leak into the next export."""
        import copy

        model = copy.deepcopy(self.model).to(device)
        return (model.half() if half else model).eval()

    def example_on(self, device: str, half: bool = False):
        x = self.example.to(device)
        return x.half() if half else x
