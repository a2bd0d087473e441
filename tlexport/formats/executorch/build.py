"""ExecuTorch export: `model.pte` (fp32) and `model.int8.pte` (PT2E int8), lowered from the same
torch.export program as `.pt2` onto the XNNPACK delegate, with the metadata as a constant method.

int8 follows the shared recovery path (`exporters.int8.recover`): the quantizer's histogram
observer, then min/max, with every layer int8; then, under `auto`, the fewest of stem and head kept
float (XNNPACK's quantizer leaves named modules float through a filter). Every trial is the lowered
`.pte` run by the ExecuTorch runtime on the gate images, as verification runs it. Needs the `executorch` extra plus
`pip install --no-deps executorch==1.5.1` (see this package's spec).
"""

from __future__ import annotations

from pathlib import Path

from ... import progress as P
from ...errors import ExportError, UsageError, first_line
from ...exporters import int8 as shared
from ...exporters.job import Artifact
from ...fileio import write_bytes
from ...tables.metadata import to_json
from . import SPEC
from .metadata import PTE_METHOD

# Upper bound of the free batch dimension given to torch.export. ExecuTorch plans memory for a
# bound of its own (15 with executorch 1.5.1 whatever is asked here); the runtime reads the real
# bound from the program and feeds larger batches in chunks.
MAX_BATCH = 64
# The layers `auto` may keep float, most likely sensitive first: the first convolution sees raw
# pixels, the classifier makes the logits (the same words as ONNX int8's aliases).
CANDIDATES = (("stem", 0.0), ("head", 0.0))


def _program(module, example, dynamic: bool):
    import torch

    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if dynamic else None
    return torch.export.export(module, (example,), dynamic_shapes=shapes)


def lower(program, path: Path, meta: dict) -> None:
    """XNNPACK-delegated ExecuTorch program with `tlexport_metadata` as a constant method."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                       constant_methods={PTE_METHOD: to_json(meta)})
    write_bytes(path, edge.to_executorch().buffer)  # fileio: OS errors name the file


def _float_modules(model, keep, head: str) -> list[str]:
    """Module names left in float. "stem" is the first convolution and "head" the classifier (the
    same words as ONNX int8); any other name must be a module of the model (`conv1`,
    `features.0.0`, ...).

    Raises:
        UsageError: a name that is neither.
    """
    import torch

    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    picked = {"stem": convs[:1], "head": [head]}
    modules = dict(model.named_modules())
    out = []
    for part in keep:
        if part in picked:
            out += picked[part]
        elif part in modules and part:
            out.append(part)
        else:
            raise UsageError(f"--int8-fallback {part!r} names no module of this model for ExecuTorch int8 "
                             "(use stem, head or a module name such as conv1)")
    return out


def quantized_program(job, batches, keep, method: str | None = None):
    """PT2E static int8 for XNNPACK: per-channel symmetric int8 weights, int8 activations
    calibrated on `batches` (`method` None: the quantizer's histogram observer; "minmax"); the
    modules `keep` names stay float."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    config = shared.pt2e_config(get_symmetric_quantization_config(is_per_channel=True), method)
    quantizer = XNNPACKQuantizer().set_global(config)
    # set_module_name(name, None) is "not supported yet": a filter leaves those modules float.
    floats = [get_module_name_filter(n) for n in _float_modules(job.model, keep, job.spec.head)]
    quantizer.set_filter_function(lambda node: not any(f(node) for f in floats))
    module = _program(job.model_on("cpu"), job.example, job.dynamic).module()
    return _program(shared.pt2e_calibrate(module, quantizer, batches), job.example, job.dynamic)


class _Trials:
    """keep -> (.pte file, keep, result): the PT2E program calibrated with `method`, lowered to
    XNNPACK and run by the ExecuTorch runtime on the export's gate images (`exporters.int8.Gate`),
    exactly as verification runs the published file. One per method; `done` is shared."""

    def __init__(self, job, batches, method, gate, work: Path, done: list):
        self.job, self.batches, self.method, self.gate, self.work, self.done = job, batches, method, gate, work, done
        self.shares: dict[Path, dict] = {}

    def __call__(self, keep):
        from ...runtimes.quiet import silenced

        with silenced(), P.step("waiting for executorch (calibration, XNNPACK lowering)"):
            program = quantized_program(self.job, self.batches, tuple(keep), self.method)
            path = self.work / f"trial-{len(self.done)}.pte"
            lower(program, path, self.job.meta)
        self.shares[path] = shared.pt2e_share(program.graph_module)
        res = self.gate.measure(path, "executorch")
        self.done.append(shared.trial_row(keep, res, shared.method_name(self.method, SPEC.int8)))
        return path, list(keep), res


def int8_file(job, batches, files: list, source: str, dst: Path):
    """Write `dst` under the shared recovery path (see the module docstring); (record, notes)."""
    import shutil

    methods = shared.methods_to_try(job, "executorch", SPEC.int8)
    policy = job.options.int8.policy(job.spec.int8_fallback)
    gate, done = shared.gate(job.run), []
    work = job.staging / ".int8-executorch"
    work.mkdir(exist_ok=True)
    try:
        trials = {m: _Trials(job, batches, m, gate, work, done) for m in methods}
        path, kept, res, _, method = shared.recover(trials.get, methods, policy,
                                                    resolve=lambda k: list(k), rank=lambda first: list(CANDIDATES))
        shared.check_reached(policy, res, job.options.verify, "stem and head", trials=done,
                             still_int8="every other layer stays int8 (XNNPACK's quantizer leaves modules float by name only)")
        share = trials[method].shares[path]
        shutil.move(str(path), str(dst))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = shared.method_name(method, SPEC.int8)
    record = shared.record(policy, kept, res, gate.inputs, done, reference="fp32 model (torch-eager CPU)",
                           calibration={"method": f"PT2E {name}", "images": len(files), "source": source,
                                        "tried": list(dict.fromkeys(t["method"] for t in done))}, **share)
    notes = [f"PT2E static int8 (XNNPACKQuantizer, per-channel symmetric weights, {name} activation ranges) "
             f"calibrated on {len(files)} images; kept in float: {', '.join(kept) or 'nothing'}; top-1 agreement "
             f"with fp32 {record['top1_agreement']:.1%} on {record['images']} images ({record['images_source']})"]
    return record, notes


def build(job, say) -> list[Artifact]:
    """model.pte or model.int8.pte (the precision it is handed) on the CPU (XNNPACK runs on Arm and x86 CPUs)."""
    from ...runtimes.quiet import silenced
    from ..files import file_name

    precision = job.precision
    record = None
    say(f"ExecuTorch {precision}")
    dst = job.staging / file_name("executorch", precision)
    notes = ["XNNPACK delegate; metadata in the constant method tlexport_metadata"]
    try:
        if precision == "fp32":
            with P.step("waiting for executorch (torch.export, XNNPACK lowering)"), silenced():
                lower(_program(job.model_on("cpu"), job.example, job.dynamic), dst, job.meta)
        else:
            # A fixed-batch program (--batch N) is traced for N images: its last calibration
            # batch is padded like every fixed-batch calibration (a module that guards its
            # input shape, as LiteRT's does, would fail on a short one).
            files, batches, source = shared.calibration(job, int(job.example.shape[0]), pad=not job.dynamic)
            record, more = int8_file(job, batches, files, source, dst)
            notes += more
    except (ExportError, UsageError):
        raise
    except Exception as e:
        raise ExportError(f"ExecuTorch {precision} export failed ({first_line(e, 300)})") from None
    return [Artifact(dst.name, "executorch", precision, notes=notes, int8=record)]
