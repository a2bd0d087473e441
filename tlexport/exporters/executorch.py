"""ExecuTorch export: `model.pte` (fp32) and `model.int8.pte` (PT2E int8), lowered from the same
torch.export program as `.pt2` onto the XNNPACK delegate, with the metadata as a constant method.

Needs the `edge` extra plus `pip install --no-deps executorch==1.5.1` (see tables/extras.py).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError, UsageError, first_line
from ..tables import metadata as md

# Upper bound of the free batch dimension given to torch.export. ExecuTorch plans memory for a
# bound of its own (15 with executorch 1.5.1 whatever is asked here); the runtime reads the real
# bound from the program and feeds larger batches in chunks.
MAX_BATCH = 64


def _program(module, example, dynamic: bool):
    import torch

    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if dynamic else None
    return torch.export.export(module, (example,), dynamic_shapes=shapes)


def lower(program, path: Path, meta: dict) -> None:
    """XNNPACK-delegated ExecuTorch program with `tlexport_metadata` as a constant method."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                       constant_methods={md.PTE_METHOD: md.to_json(meta)})
    path.write_bytes(edge.to_executorch().buffer)


def _float_modules(model, keep: tuple[str, ...], head: str) -> list[str]:
    """Module names left in float. "stem" is the first convolution and "head" the classifier (the
    same words as ONNX int8, see quantize.float_nodes); any other name must be a module of the
    model (`conv1`, `features.0.0`, ...).

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


def quantized_program(job, batches, keep: tuple[str, ...]):
    """PT2E static int8 for XNNPACK: per-channel symmetric int8 weights, int8 activations,
    calibrated on `batches`; the modules `keep` names stay float."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    # set_module_name(name, None) is "not supported yet": a filter leaves those modules float.
    floats = [get_module_name_filter(n) for n in _float_modules(job.model, keep, job.spec.head)]
    quantizer.set_filter_function(lambda node: not any(f(node) for f in floats))
    prepared = prepare_pt2e(_program(job.model_on("cpu"), job.example, job.dynamic).module(), quantizer)
    with torch.no_grad():
        for b in batches:
            prepared(torch.from_numpy(b))
    return _program(convert_pt2e(prepared), job.example, job.dynamic)


def _agreement(job, program, inputs, ref):
    """parity's int8 comparison of the quantized program (run in torch) with the fp32 model."""
    import numpy as np
    import torch

    from ..verify.compare import compare, gates_for

    module = program.module()
    fixed = None if job.dynamic else int(job.example.shape[0])
    out = []
    with torch.no_grad():
        for _, b in inputs.batches(fixed or 32):
            n = len(b)
            if fixed:
                b = np.concatenate([b, np.repeat(b[-1:], fixed - n, axis=0)])
            out.append(module(torch.from_numpy(b)).float().numpy()[:n])
    return compare(ref, np.concatenate(out), inputs.labels, inputs.names, "int8", gates_for("int8"),
                   runtime="executorch")


def int8_program(job, batches):
    """(program, record) under the int8 policy of ONNX int8: `--int8-fallback none` quantizes
    everything, a list keeps those modules float, and `auto` (the default) keeps everything int8
    when parity's int8 gate holds on the held-out images, else stem and head float. The record
    (manifest `int8`) says what stayed float and, for `auto`, the agreement reached."""
    import numpy as np
    import torch

    from . import quantize

    policy = quantize.parse_fallback(job.options.get("int8_fallback") or job.spec.int8_fallback)
    record = {"fallback": policy if isinstance(policy, str) else list(policy),
              "reference": "fp32 model (torch-eager CPU)"}
    if policy != "auto":
        keep = () if policy == "none" else tuple(policy)
        return quantized_program(job, batches, keep), {**record, "float_nodes": list(keep)}
    inputs = quantize.held_out(job.run)
    model = job.model_on("cpu")
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(b)).float().numpy() for _, b in inputs.batches(32)])
    trials = []
    for keep in ((), ("stem", "head")):
        program = quantized_program(job, batches, keep)
        res = _agreement(job, program, inputs, ref)
        trials.append({"float_nodes": list(keep), "top1_agreement": round(res.top1_agreement / 100, 4),
                       "accuracy_delta": res.accuracy_delta, "passed": bool(res.passed)})
        if res.passed:
            break
    return program, {**record, **trials[-1], "images": len(inputs), "images_source": inputs.source,
                     "labelled": inputs.labels is not None, "trials": trials}


def build(job, say) -> tuple[list, list[str]]:
    """model.pte and/or model.int8.pte on the CPU (XNNPACK runs on Arm and x86 CPUs)."""
    from ..tables.artifacts import file_name
    from . import quantize
    from .job import Artifact
    from ..runtimes.quiet import silenced

    out, skipped = [], [f"executorch {p}: only fp32 and int8 .pte are produced" for p in job.precisions
                        if p not in ("fp32", "int8")]
    for precision in [p for p in ("fp32", "int8") if p in job.precisions]:
        record = None
        say(f"ExecuTorch {precision}" + (" (calibrating)" if precision == "int8" else ""))
        dst = job.staging / file_name("executorch", precision)
        notes = ["XNNPACK delegate; metadata in the constant method tlexport_metadata"]
        try:
            if precision == "fp32":
                with silenced():
                    lower(_program(job.model_on("cpu"), job.example, job.dynamic), dst, job.meta)
            else:
                o = job.options
                files = quantize.calibration_images(job.run, o["calib_data"], o["calib_size"])
                batches = quantize.calibration_batches(files, job.run.preprocess, int(job.example.shape[0]))
                with silenced():
                    program, record = int8_program(job, batches)
                    lower(program, dst, job.meta)
                record["calibration"] = {"method": "PT2E observers (XNNPACK symmetric)", "images": len(files)}
                agreement = (f"; top-1 agreement with fp32 {record['top1_agreement']:.1%} on {record['images']} "
                             f"images ({record['images_source']})" if "top1_agreement" in record else "")
                notes.append(f"PT2E static int8 (XNNPACKQuantizer, per-channel symmetric weights) calibrated "
                             f"on {len(files)} images; kept in float: {', '.join(record['float_nodes']) or 'nothing'}"
                             + agreement)
        except (ExportError, UsageError):
            raise
        except Exception as e:
            raise ExportError(f"ExecuTorch {precision} export failed ({first_line(e, 300)})") from None
        out.append(Artifact(dst.name, "executorch", precision, devices=["cpu"], notes=notes,
                            int8=record if precision == "int8" else None))
    return out, skipped
