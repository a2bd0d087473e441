"""What the export pipeline hands each format's builder (`Job`), what a builder returns
(`Artifact` rows for manifest.json), the files one format stages for another (`Staged`), and the
builder's contract (`Builder`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from .options import ExportOptions

if TYPE_CHECKING:  # annotations only: building a Job needs torch, importing this module does not
    import torch

    from ..models import Run
    from ..tables.archs import ArchSpec

# The free height/width range. A classifier downsamples 32x before its global pooling, and
# torch.export specialises a dimension that would be 1 there, so the smallest free side is 33.
MIN_SIDE, MAX_SIDE = 33, 4096


def dynamic_shapes(batch: bool, size: bool):
    """torch.export's `dynamic_shapes` for one NCHW image input: a free batch and/or free height
    and width (named so an ONNX graph's dims read "batch", "height", "width"); None: all fixed."""
    import torch

    dims = {}
    if batch:
        dims[0] = torch.export.Dim("batch", min=1, max=65536)
    if size:
        dims[2] = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
        dims[3] = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return (dims,) if dims else None


@dataclass
class Artifact:
    """One exported file (or folder), as recorded in manifest.json.

    `devices` are the devices it is meant to run on (and is verified on where present); the
    pipeline sets them from the format's spec. `companions` are the other files that belong to
    it ([{"file": relative path, "size", "sha256"}], filled in by the pipeline from the spec):
    OpenVINO's .bin, ORT's operator config, a Triton model's config.pbtxt and labels.
    """

    file: str
    format: str
    precision: str
    role: str = "model"  # "model" | "baked-preprocess" (one decoded uint8 image in)
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
    speed: dict | None = None  # {runtime: {"p50_ms", "batch"}}: timed at export against the others (exporters.speed)
    compat: dict | None = None  # the oldest runtime releases that load it, and the --target checks

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Staged:
    """A file one format staged that others are converted from (the ONNX files OpenVINO, ORT
    mobile and Triton start from), with what making it decided: `int8` is the record of an int8
    file (which layers stayed float, the agreement reached), reused by every format made from it.
    A failure is kept too, so the formats converted from a file that could not be made fail at
    once with its reason instead of repeating the work."""

    path: Path
    int8: dict | None = None
    notes: list = field(default_factory=list)
    error: str | None = None  # making it failed: every format converted from it fails with this reason


@dataclass
class Job:
    """Everything a format builder needs.

    Args:
        run: the `tlexport.models.Run` being exported.
        model: its eval-mode float32 model on the CPU; builders copy it, never change it.
        meta: the metadata embedded in every artifact.
        example: float32 NCHW example input on the CPU (batch 2 when dynamic).
        staging: the private folder builders write into.
        precisions: what to build: one precision (`precision`), already checked against the
            format's spec, the architecture and the device (a tuple for builders written before
            the pipeline handed them one at a time).
        options: the user's typed options.
        spec: the run's ArchSpec row.
        settings: the export's shared settings, decided by the formats' `prepare` hooks before
            any heavy work (`exporters.hooks`) and recorded in the manifest, e.g. ONNX's
            `settings["opset"]` (None when no ONNX-based format is exported).
        staged: (format, precision) -> what a format staged for others in this export.
    """

    run: Run
    model: torch.nn.Module
    meta: dict
    example: torch.Tensor
    staging: Path
    precisions: tuple[str, ...]
    options: ExportOptions
    spec: ArchSpec
    settings: dict = field(default_factory=dict)
    staged: dict[tuple[str, str], Staged] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The one precision a builder makes (the pipeline calls a builder once per precision)."""
        if len(self.precisions) != 1:
            raise ValueError(f"a builder is handed one precision, not {', '.join(self.precisions) or 'none'}")
        return self.precisions[0]

    @property
    def dynamic(self) -> bool:
        return self.options.batch.dynamic

    @property
    def dynamic_size(self) -> bool:
        """Height and width are left free (`--dynamic-size`)."""
        return self.options.dynamic_size

    @property
    def device(self) -> str:
        return self.options.device

    def model_on(self, device: str, half: bool = False):
        """A private copy of the model on `device` (fp16 when `half`): builders never modify the
        shared model, so one precision cannot leak into the next export."""
        import copy

        model = copy.deepcopy(self.model).to(device)
        return (model.half() if half else model).eval()

    def example_on(self, device: str, half: bool = False):
        x = self.example.to(device)
        return x.half() if half else x


class Builder(Protocol):
    """The plug-in contract of a format package's `build` module: its `build(job, say)`.

    It is called once per precision: it makes the artifact of `job.precision` (already checked
    against the format's spec, the architecture and the device) under the spec's file names in
    `job.staging`, embeds `job.meta`, and returns its `Artifact`s (the model, and any extra file
    of its own such as ONNX's baked-preprocessing model); `say(line)` reports progress. A builder
    that does not return that precision's model fails the export. It raises `ExportError` (one
    line) when the conversion fails. Its own options are `job.options.of(<format name>)`.
    """

    def __call__(self, job: Job, say: Callable[[str], None]) -> list[Artifact]: ...
