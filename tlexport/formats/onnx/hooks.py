"""ONNX's steps in `tlexport export` beyond building (`tlexport.exporters.hooks.FormatHooks`): the
opset every ONNX-based format shares, what an `.onnx` file says about itself and which runtime
releases load it, the `--target` checks, and the verification of the baked-preprocessing model.
The formats converted from its files reuse `describe` (Triton's model is an `.onnx` file) or
`describe_compat` (`.ort`, `.tflite`). Heavy packages are imported inside each hook."""

from __future__ import annotations

from pathlib import Path

__all__ = ["prepare", "describe", "check", "verify"]  # describe_compat: the helper ORT's and LiteRT's describe is


def prepare(formats, options) -> dict:
    """{"opset", "targets"}: the ONNX opset when ONNX or a format built from its files is exported
    (validated before any heavy work; the newest every --target reads when targets are given,
    else None), and the --target releases, both recorded in the manifest."""
    from .. import registry

    onnx = options.of("onnx")
    opset = None
    if any(f == "onnx" or registry.get(f).built_from == "onnx" for f in formats):
        from .graph import MIN_OPSET, resolve_opset
        from .targets import opset_for

        opset = resolve_opset(opset_for(onnx.targets, onnx.opset, MIN_OPSET))
    return {"targets": [t.text for t in onnx.targets], "opset": opset}


def describe(artifact, path: Path) -> None:
    """An `.onnx` file's opset and input/output spec, read from the graph, and its compat."""
    if path.is_file():
        from .graph import io_spec, opset_of

        artifact.opset = opset_of(path)
        artifact.inputs, artifact.outputs = io_spec(path)
    describe_compat(artifact, path)


def describe_compat(artifact, path: Path) -> None:
    """The oldest runtime releases that load the file (`compat.oldest`: `.onnx`, `.ort`, `.tflite`)."""
    if path.is_file():
        from .compat import oldest

        artifact.compat = oldest(path)


def check(artifacts, folder: Path, job) -> None:
    """Every file a `--target` release reads, checked against it (ExportError naming what it lacks)."""
    targets = job.options.of("onnx").targets
    if targets:
        from .targets import check as check_targets

        check_targets(artifacts, folder, targets)


def verify(artifacts, folder: Path, run) -> None:
    """The baked-preprocessing model, per decoded image, against tlexport's own pipeline."""
    from .baked import verify_baked

    verify_baked(folder, artifacts, run)
