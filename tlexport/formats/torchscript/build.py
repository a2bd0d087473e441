"""TorchScript export: traced, checked at other batch sizes, frozen, with metadata inside.

torch.jit tracing is deprecated in current PyTorch (torch.export / .pt2 is its successor);
tlexport keeps it because many deployment stacks (LibTorch C++, older mobile runtimes) still
load TorchScript.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import ExportError, first_line
from ...exporters.job import Artifact
from ...tables.metadata import to_json
from ..archive import EXTRA_FILE


def export_torchscript(module, example, path: Path, *, dynamic: bool, meta: dict,
                       size_checks: str | None = None) -> list[str]:
    """Trace `module`, check it at other batch sizes, freeze it and save it with `tlexport.json`.

    Args:
        module: nn.Module in eval mode (already on the tracing device and dtype).
        example: example input (batch 2 when dynamic, else the fixed batch).
        path: destination (temporary name).
        dynamic: check the trace at batch 1 and 3, and that the saved file runs at both.
        meta: metadata dict.
        size_checks: the architecture's reason why its tracer warnings only come from checks and
            branches on the input's height and width (`ArchSpec.trace_size_checks`); None keeps
            every tracer warning an error.
    Returns:
        notes for the manifest.
    Raises:
        ExportError: tracer warnings, a trace that depends on the batch size, or a saved module
            that does not reload and run.
    """
    import torch

    try:
        with warnings.catch_warnings():
            # Tracer warnings mean the trace baked in a Python value (e.g. a shape): fail loudly,
            # unless the registry knows the value is the input's height or width, which every
            # tlexport artifact fixes anyway (the batch stays checked below).
            warnings.simplefilter("ignore")
            if size_checks is None:
                warnings.simplefilter("error", torch.jit.TracerWarning)
            # torch's own check_inputs re-traces once per input (~23 s for resnet50 at 224 px on
            # 2 cores); comparing outputs at other batch sizes catches a batch-dependent trace too.
            traced = torch.jit.trace(module, example, check_trace=False, strict=True)
            if dynamic:
                _check_batches(module, traced, example)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"TorchScript tracing failed ({first_line(e, 300)})") from None
    notes = _save_optimized(traced, example, path, meta, dynamic)
    if size_checks:
        notes.append(f"tracer warnings allowed: {size_checks}; the trace matched eager at batch 1 and 3 on other inputs")
    return notes


def _check_batches(module, traced, example) -> None:
    """The trace gives eager's logits at batch 1 and 3 (it was traced at batch 2), on inputs it was
    not traced with, so a baked-in batch size or input value shows."""
    import torch

    rtol, atol = (1e-2, 1e-2) if example.dtype == torch.float16 else (1e-3, 1e-4)
    gen = torch.Generator().manual_seed(1)
    other = torch.randn(3, *example.shape[1:], generator=gen).to(example.device, example.dtype)
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        for x in (other[:1], other):
            want, got = module(x), traced(x)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
                raise ExportError(f"the TorchScript trace disagrees with the model at batch {x.shape[0]}")


def _save_optimized(traced, example, path: Path, meta: dict, dynamic: bool) -> list[str]:
    """Save optimize_for_inference's module when the saved file reloads and runs; on CPU its
    MKLDNN-prepacked weights currently do not survive torch.jit.save/load, and then the frozen
    module (conv+BN already folded by freeze) is saved instead. Each try freezes afresh because
    optimize_for_inference rewrites the module in place."""
    import torch

    extra = {EXTRA_FILE: to_json(meta)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if example.device.type == "cpu":
                raise RuntimeError("known not to reload on CPU: do not spend time trying")
            _save(torch.jit.optimize_for_inference(torch.jit.freeze(traced)), path, extra)
            _check_reload(path, example, dynamic)
            return ["frozen + optimize_for_inference"]
        except Exception:  # a full disk fails this second save too, with its one-line error
            _save(torch.jit.freeze(traced), path, extra)
    _check_reload(path, example, dynamic)
    return ["frozen (optimize_for_inference's output does not reload on CPU, so it is not applied)"]


def _save(module, path: Path, extra: dict) -> None:
    """Serialise to memory, then write atomically through fileio: torch's own file writer aborts
    the whole process on a full disk (a C++ exception), this turns it into a one-line error and
    leaves no partial file."""
    import io

    import torch

    from ...fileio import DiskFull, write_bytes

    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra)
    try:
        write_bytes(path, buffer.getvalue())
    except (DiskFull, OSError) as e:
        raise ExportError(f"cannot write {path.name}: {first_line(e)}") from None


def _check_reload(path: Path, example, dynamic: bool) -> None:
    """The saved archive reloads and runs at batch 1 and 3 (dynamic) or the fixed batch."""
    import torch

    sizes = (1, 3) if dynamic else (example.shape[0],)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path), map_location=example.device)
            # Plain interpretation: the check is "does it run at this batch", and the profiling
            # executor's first-call optimisation would cost more than the check itself.
            with torch.jit.optimized_execution(False):
                shapes = [loaded(example[:1].expand(n, *example.shape[1:]).contiguous()).shape[0] for n in sizes]
        if shapes != list(sizes):
            raise ExportError(f"TorchScript module returned batches {shapes} for input batches {list(sizes)}")
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"saved TorchScript module does not run at batch {sizes} ({first_line(e, 300)})") from None


def build(job, say) -> list[Artifact]:
    """model.ts (fp32, traced on the CPU so it loads anywhere) or, with --device cuda,
    model.fp16.ts (traced on the GPU: fp16 convolutions have no CPU kernels; the pipeline asks
    for fp16 only then, as its spec row is cuda_only)."""
    from ..files import file_name

    precision = job.precision
    say(f"TorchScript {precision}")
    half = precision == "fp16"
    device = "cuda" if half else "cpu"
    dst = job.staging / file_name("torchscript", precision)
    notes = export_torchscript(job.model_on(device, half), job.example_on(device, half), dst,
                               dynamic=job.dynamic, meta=job.meta, size_checks=job.spec.trace_size_checks)
    return [Artifact(dst.name, "torchscript", precision, device=device, notes=notes)]
