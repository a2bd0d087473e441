"""Models from the architecture registry: weights resolution (imagenet / path / none), head
replacement, safe loading, and the run directories training writes."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from pathlib import Path

from .data.preprocess import Preprocess
from .errors import ArtifactError, WeightsError, first_line
from .run import RunDir, RunError, check_labels
from .tables import archs


def create(arch: str, num_classes: int, device="cpu", image_size: int | None = None):
    """An untrained torchvision classifier with a `num_classes` head (`image_size`: the input side,
    for architectures whose layers depend on it, such as ViT's position embedding)."""
    return archs.get(arch).build(num_classes, image_size).to(device)


def default_preprocess(arch: str) -> Preprocess:
    """The preprocessing of the architecture's ImageNet weights (used whatever the weights)."""
    return Preprocess.from_weights(archs.get(arch).weights)


hub_checkpoint_path = archs.hub_checkpoint_path


@dataclass
class WeightsSource:
    kind: str  # imagenet | path | none
    file: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.kind, "file": self.file}


def load_imagenet_state(arch: str) -> tuple[dict, WeightsSource]:
    """torchvision's ImageNet weights through its own download + cache (works offline when the
    file is already in $TORCH_HOME/hub/checkpoints)."""
    weights = archs.get(arch).weights
    cached = hub_checkpoint_path(arch)
    try:
        # torch.hub announces every download on stdout, which would corrupt `--json` output.
        with contextlib.redirect_stdout(io.StringIO()):
            state = weights.get_state_dict(progress=False, check_hash=False, weights_only=True)
    except Exception as e:  # URLError, socket errors, HTTP errors, a corrupt cache file
        if cached.exists():
            raise WeightsError(f"cached ImageNet weights {cached} cannot be read ({first_line(e)}); delete it and retry") from None
        raise WeightsError(
            f"ImageNet weights for {arch} could not be downloaded ({first_line(e)}). Put {cached.name} "
            f"(from {weights.url}) in {cached.parent}, or use --weights PATH or --weights none"
        ) from None
    return state, WeightsSource("imagenet", str(cached))


def read_state_dict(path: Path | str) -> dict:
    """Read a state dict from .safetensors, or a .pt/.pth with weights_only=True. Checkpoints
    that wrap the state dict ({"model": ...} / {"state_dict": ...}) are unwrapped."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{path} is not a readable safetensors file ({first_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # "Unsupported global" is the weights-only unpickler meeting a class or function:
        # the file wants to build arbitrary objects (or run code). Anything else is damage.
        if "Unsupported global" in str(e):
            raise WeightsError(
                f"{path} holds Python objects, not just tensors; tlexport refuses to unpickle it "
                "(save a plain state_dict, or use .safetensors)"
            ) from None
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({first_line(e)})") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _body(state: dict, spec: archs.ArchSpec) -> dict:
    """The tensors of a state dict that are not the classifier head (nor keys the arch ignores)."""
    skip = (spec.head_prefix, *spec.ignore_keys)
    return {k: v for k, v in state.items() if not k.startswith(skip)}


def load_backbone(model, state: dict, arch: str, origin: str) -> None:
    """Load everything but the classifier head (which may have another size) strictly."""
    spec = archs.get(arch)
    body = _body(state, spec)
    expected = {k: v.shape for k, v in _body(model.state_dict(), spec).items()}
    if spec.position_embedding:
        body = _resize_position_embedding(body, expected, model)
    missing = sorted(set(expected) - set(body))
    unexpected = sorted(set(body) - set(expected))
    wrong = [k for k in expected if k in body and tuple(body[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        guess = guess_arch(state, spec.family)
        hint = f" (they look like {guess})" if guess and guess != arch else ""
        raise WeightsError(
            f"weights in {origin} do not fit {arch}{hint}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrongly shaped tensors"
        )
    model.load_state_dict(body, strict=False)


def _resize_position_embedding(body: dict, expected: dict, model) -> dict:
    """ViT weights hold position embeddings for 224 px; another input size interpolates them
    (torchvision's own helper) so the pretrained body still fits."""
    key = "encoder.pos_embedding"
    if key not in body or key not in expected or body[key].shape == expected[key]:
        return body
    from torchvision.models.vision_transformer import interpolate_embeddings

    return interpolate_embeddings(model.image_size, model.patch_size, body)


def guess_arch(state: dict, family: str | None = None) -> str | None:
    """Which registered architecture a state dict belongs to, by its key set and shapes (None if
    none). Looks at the tested architectures and the expected family only: building every
    torchvision classifier, even on the meta device, would take seconds."""
    rows = archs.registry()
    shapes: dict[str, dict] = {}
    for spec in (r for r in rows.values() if r.tested or r.family == family):
        if spec.head_prefix not in shapes:
            shapes[spec.head_prefix] = {k: tuple(v.shape) for k, v in _body(state, spec).items()}
        if shapes[spec.head_prefix] == _body_shapes(spec.name):
            return spec.name
    return None


@functools.lru_cache(maxsize=None)
def _body_shapes(arch: str) -> dict:
    """{key: shape} of an architecture's body, built on the meta device (no memory, no init cost)."""
    import torch

    spec = archs.get(arch)
    try:
        with torch.device("meta"):
            ref = spec.build(1).state_dict()
    except NotImplementedError:  # RegNet computes its widths from tensors: build it for real
        ref = spec.build(1).state_dict()
    return {k: tuple(v.shape) for k, v in _body(ref, spec).items()}


def build(arch: str, num_classes: int, weights: str = "imagenet", image_size: int | None = None):
    """A registered architecture with pretrained body and a fresh `num_classes` head.

    Args:
        weights: "imagenet", "none", or a path to .safetensors/.pt/.pth.
        image_size: the input side it will be trained at (ViT's position embedding follows it).
    Returns:
        (model, WeightsSource)
    """
    model = create(arch, num_classes, image_size=image_size)
    if weights == "none":
        return model, WeightsSource("none")
    if weights == "imagenet":
        state, source = load_imagenet_state(arch)
        load_backbone(model, state, arch, f"the ImageNet file {source.file}")
        return model, source
    path = Path(weights).expanduser()
    load_backbone(model, read_state_dict(path), arch, str(path))
    return model, WeightsSource("path", str(path.resolve()))


@dataclass
class Run:
    """A finished (or running) training run as stored on disk (read through tlexport.run)."""

    dir: Path
    meta: dict

    @property
    def folder(self) -> RunDir:
        return RunDir(self.dir)

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.meta["preprocess"])

    def weights_file(self, which: str = "best") -> Path:
        return self.folder.weights_file(which)

    def samples(self, split: str = "val") -> list[tuple[Path, int]]:
        """The (path, label) list of the run's train or val split, from split.json ([] when the
        run has no record or its data folder has moved)."""
        record = self.folder.read_split()
        if record is None:
            return []
        root = Path(record["root"])
        check_labels(record, len(self.classes), self.folder.split_file)
        out = [(root / rel, y) for rel, y in record[split]]
        return [s for s in out if s[0].is_file()]

    def load_model(self, which: str = "best", device="cpu"):
        """The trained model in eval mode, loaded strictly from safetensors."""
        model = create(self.arch, len(self.classes), image_size=self.preprocess.crop)
        state = read_state_dict(self.weights_file(which))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise WeightsError(f"{self.weights_file(which)} does not match {self.folder.meta_file.name} "
                               f"({first_line(e)})") from None
        return model.to(device).eval()


def load_run(run_dir: Path | str) -> Run:
    """Read a run directory written by `tlexport train`.

    Raises:
        RunError: the folder is missing, is not a run, or its run.json is damaged (the
            preprocessing included: it is checked here, before any command relies on it).
    """
    folder = RunDir(run_dir)
    meta = folder.read_meta()
    try:
        Preprocess.from_dict(meta["preprocess"], str(folder.meta_file))
    except ArtifactError as e:
        raise RunError(str(e)) from None  # names the file and the field
    return Run(folder.path, meta)
