"""parity and bench on a target: the host keeps the PyTorch reference and the gates
(`verify.compare`, the same as local parity), the agent runs the files there.

What is shipped for parity: the preprocessed float32 tensors, not the images. Parity asks "does
this runtime on that device compute what training computes"; feeding the same bits as the host
reference isolates the runtime (its kernels, its fp16/int8 arithmetic) from the decoder (the
target's libjpeg and Pillow may round differently: that is predict's question, and predict --on
ships the images so the target decodes them itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, UsageError
from .run import AgentRun, run_agent
from .target import Target, parse

# Format -> the runtime name the agent runs it with (the host's names, for --runtime and reports).
AGENT_RUNTIMES = {"onnx": "onnxruntime", "ort": "onnxruntime", "tflite": "litert", "ncnn": "ncnn",
                  "openvino": "openvino"}
EMULATED = "emulated — not a speed"


@dataclass
class Item:
    """One file to ship: its name there, format, precision, runtime, and the path here."""

    file: str
    format: str
    precision: str
    runtime: str
    path: Path
    extra: dict = field(default_factory=dict)

    def files(self) -> dict:
        """Itself and its companions that exist (OpenVINO's weights beside its graph), by name."""
        from ..tables.artifacts import companions_of

        out = {self.file: self.path}
        for name in companions_of(self.file):
            if (self.path.parent / name).is_file():
                out[name] = self.path.parent / name
        return out

    def job(self) -> dict:
        return {"file": self.file, "format": self.format, "precision": self.precision,
                "runtime": self.runtime, **self.extra}


def select(export_dir: Path, runtimes=None, precisions=None) -> tuple[list[Item], list[tuple]]:
    """The export's files the agent can run, and (runtime, precision, reason) for the others.
    TorchScript and .pt2 are code: they are never shipped, trusted or not."""
    from ..formats import registry
    from ..tables.artifacts import MODEL, list_artifacts

    items, skipped = [], []
    for entry in list_artifacts(export_dir):
        if entry.role != MODEL or (precisions and entry.precision not in precisions):
            continue
        runtime = AGENT_RUNTIMES.get(entry.format)
        if runtimes and (runtime or entry.format) not in runtimes:
            continue
        if entry.refused:
            skipped.append((runtime or entry.format, entry.precision, entry.refused))
        elif registry.FORMATS[entry.format].runs_code:
            skipped.append((entry.format, entry.precision, "loading it runs code: never shipped to a target"))
        elif runtime is None:
            skipped.append((entry.format, entry.precision, f"the agent does not run {entry.format} files"))
        else:
            items.append(Item(entry.path.name, entry.format, entry.precision, runtime, entry.path,
                              _extra(entry)))
    return items, skipped


def _extra(entry) -> dict:
    """What the agent needs beyond the file: ncnn's input and output blob names (from model.param)."""
    if entry.format != "ncnn":
        return {}
    from ..formats.ncnn import PARAM
    from ..formats.ncnn.metadata import read_param

    graph = read_param(entry.path / PARAM)
    if not graph.inputs or len(graph.outputs) != 1:
        raise ArtifactError(f"{entry.path / PARAM}: not one image in and logits out")
    return {"ncnn_input": graph.inputs[0].tops[0], "ncnn_output": graph.outputs[0]}


def device_line(device: dict) -> str:
    """One line describing the target (for notes and the terminal)."""
    parts = [device.get("hostname"), device.get("machine"), device.get("cpu"),
             f"{device.get('cores')} cores, {device.get('threads')} threads used",
             " ".join(device.get("isa") or []) or None, device.get("os"), f"Python {device.get('python')}",
             ", ".join(f"{k} {v}" for k, v in (device.get("versions") or {}).items())]
    text = "; ".join(str(p) for p in parts if p)
    if device.get("emulated"):
        text += f" — EMULATED ({device.get('emulated_why') or 'declared'}): timings are not speeds"
    return text


def _agent(target: Target, mode: str, items: list[Item], inputs: np.ndarray, progress, images=None,
           **job) -> AgentRun:
    files = {name: path for i in items for name, path in i.files().items()}
    run = run_agent(target, {"mode": mode, "items": [i.job() for i in items], **job}, inputs, files, progress=progress,
                    images=images)
    if target.emulated and not run.device.get("emulated"):
        run.device.update(emulated=True, emulated_why="declared with #emulated")
    return run


def parity_on(on: str, export_dir, options=None, *, progress=None, record=True, **keywords):
    """`tlexport parity EXPORT_DIR --on TARGET`: the same inputs, reference and gates as local
    parity; the files run on the target. Returns a ParityReport whose `environment` holds the
    host's and the target's description; the result is recorded in the export's manifest.

    Args:
        options: a `ParityOptions` (data, random, runtimes, precisions, atol, rtol, max_images,
            batch_size, run_dir are used; a target has no reference, device or trust_code choice),
            or instead its fields as keywords.
    Raises:
        UsageError: bad target or options; RemoteError: the target could not run the agent.
        TypeError: both `options` and keywords, or an unknown keyword.
    """
    from ..envinfo import environment
    from ..models import load_run
    from ..tables import archs
    from ..keywords import options_or_keywords
    from ..tables.artifacts import find_run_dir
    from ..verify import parity as P

    o = options_or_keywords(P.ParityOptions, options, keywords, "parity_on")
    data, random, atol, rtol, max_images, batch_size = o.data, o.random, o.atol, o.rtol, o.max_images, o.batch_size
    runtimes, precisions, run_dir = o.runtimes, o.precisions, o.run_dir
    target, export_dir = parse(on), Path(export_dir).expanduser()
    P._validate(export_dir, data, random, atol, rtol, max_images, batch_size)
    run = load_run(find_run_dir(export_dir, run_dir))
    spec = archs.get(run.arch)
    atol, rtol = (spec.atol if atol is None else atol), (spec.rtol if rtol is None else rtol)
    items, skipped = select(export_dir, runtimes, precisions)
    if not items:
        raise UsageError(f"{export_dir} holds no file the agent can run on a target "
                         f"({', '.join(sorted(set(AGENT_RUNTIMES)))} files)")
    inputs, notes = P.gather_inputs(run, data, random, max_images)
    from .. import runtimes as rt

    with P.no_tf32():
        ref = P._reference(rt, export_dir, run, "torch-eager", False)
        try:
            ref_logits = P._reference_logits(ref, inputs, batch_size, progress)
        finally:
            ref.close()
    tensors = inputs.batch(0, len(inputs))  # the very bits the reference was fed
    baked = Baked(export_dir, run, runtimes, precisions, max_images)
    agent = _agent(target, "parity", items + baked.items, tensors, progress, images=baked.pixels,
                   batch_size=batch_size)
    by_file = {i.file: i for i in items}
    results = [_compared(r, by_file[r["file"]], inputs, ref_logits, run, atol, rtol) for r in agent.results
               if r.get("file") in by_file]
    results += [baked.compared(r, run, atol, rtol) for r in agent.results if r.get("file") in baked.by_file]
    notes += baked.notes
    results += [_skipped_result(name, precision, why) for name, precision, why in skipped]
    compared = [r for r in results if r.skipped_reason is None]
    notes = [f"on {target.where}: {device_line(agent.device)}", *notes]
    labels = inputs.labels
    ref_acc = 100.0 * float(np.mean(ref_logits.argmax(axis=1) == labels)) \
        if labels is not None and (labels >= 0).all() else None
    report = P.ParityReport(
        passed=bool(compared) and all(r.passed for r in compared), reference=ref.label, images=len(inputs),
        results=results, source=inputs.source, labelled=labels is not None, reference_accuracy=ref_acc,
        skipped_images=inputs.skipped, atol=atol, rtol=rtol, run_dir=str(run.dir), export_dir=str(export_dir),
        notes=notes, environment={**environment(), "target": {"on": target.text, **agent.device}})
    # The target's own logits, for callers that compare them with another machine's (not in JSON).
    report.target_logits = {r["file"]: r["logits"] for r in agent.results if isinstance(r.get("logits"), dict)}
    if record:
        from .record import record_parity

        note = record_parity(export_dir, target, agent.device, results)
        if note:
            report.notes.append(note)
    return report


class Baked:
    """The in-graph preprocessing models (role baked-preprocess, `model.uint8.onnx`) in a parity on a
    target. They take decoded pixels, not the reference's tensors: the host decodes up to
    `baked.MAX_IMAGES` val images (fewer with --max-images) once (their own sizes, as an app decodes them), ships those very
    pixels (.npy, read without pickle there), and compares the target's logits with this
    machine's onnxruntime on the same file and pixels under the fp32 gates. What the target adds
    is its kernels alone; the file's agreement with PyTorch through tlexport's preprocessing was
    verified at export, per image."""

    def __init__(self, export_dir: Path, run, runtimes, precisions, max_images=None):
        from ..tables.artifacts import BAKED, list_artifacts

        self.items, self.pixels, self.by_file, self.notes, self.names = [], {}, {}, [], []
        if runtimes and "onnxruntime" not in runtimes:
            return
        entries = [e for e in list_artifacts(export_dir) if e.role == BAKED and e.format == "onnx" and not e.refused
                   and (not precisions or e.precision in precisions)]
        if not entries:
            return
        import io

        from ..formats.onnx.baked import MAX_IMAGES, decoded_images

        images, self.names, source = decoded_images(run, min(MAX_IMAGES, max_images or MAX_IMAGES))
        self.arrays = [np.ascontiguousarray(np.asarray(im.convert("RGB")), dtype=np.uint8) for im in images]
        for i, a in enumerate(self.arrays):
            buf = io.BytesIO()
            np.save(buf, a, allow_pickle=False)
            self.pixels[f"pixels-{i:06d}.npy"] = buf.getvalue()
        self.items = [Item(e.path.name, e.format, e.precision, "onnxruntime", e.path, {"pixels": list(self.pixels)})
                      for e in entries]
        self.by_file = {item.file: item for item in self.items}
        self.notes.append(f"{', '.join(self.by_file)}: {source} decoded here, the same pixels run on the target "
                          "and by this machine's onnxruntime, compared with the fp32 gates (its agreement "
                          "with PyTorch was verified at export)")

    def host_logits(self, item: Item) -> np.ndarray:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(item.path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: a})[0] for a in self.arrays]).astype(np.float32)

    def compared(self, res: dict, run, atol, rtol):
        from types import SimpleNamespace

        from ..formats.metadata import read_metadata
        from ..verify.compare import compare, gates_for, record_metadata

        item = self.by_file[res["file"]]
        base, logits, _ = received(res, item)
        if logits is None:
            return base
        out = compare(self.host_logits(item), logits, SimpleNamespace(names=self.names, labels=None), "fp32",
                      gates_for("fp32", atol, rtol), classes=run.classes, runtime=item.runtime, device="cpu")
        out.artifact, out.seconds = str(item.path), None
        record_metadata(out, lambda: read_metadata(item.path), run)
        return out


def _skipped_result(runtime, precision, why):
    from ..verify.compare import RuntimeResult

    return RuntimeResult(runtime, precision, "cpu", skipped_reason=why)


class _Alone:
    """Stands in for a runtime in `check_batch_independence`: the agent already ran the first
    images alone there, and this hands their logits back in order."""

    def __init__(self, rows):
        self.rows = list(rows)

    def run(self, batch):
        return self.rows.pop(0)

    def synchronize(self):
        pass


def decode(blob) -> np.ndarray:
    """A float32 array the agent sent ({"shape", "f32": base64}); ValueError when malformed."""
    import base64

    shape = [int(n) for n in blob["shape"]]
    data = base64.b64decode(blob["f32"], validate=True)
    return np.frombuffer(data, dtype=np.float32).reshape(shape).copy()


def received(res: dict, item: Item):
    """(the file's result row, its logits, the logits of the images run alone) from the agent's
    result; the logits are None when the file was skipped or failed there (the row says why)."""
    from ..verify.compare import RuntimeResult

    base = RuntimeResult(item.runtime, item.precision, "cpu", artifact=str(item.path))
    if res.get("skipped"):
        base.skipped_reason = str(res["skipped"])[:500]
        return base, None, []
    if res.get("error"):
        base.fail(str(res["error"])[:500])
        return base, None, []
    try:
        return base, decode(res["logits"]), [decode(a) for a in res.get("alone", [])]
    except (KeyError, TypeError, ValueError) as e:
        base.fail(f"the agent sent malformed logits ({e})")
        return base, None, []


def _compared(res: dict, item: Item, inputs, ref_logits, run, atol, rtol):
    """One file's target logits through the same gates as local parity (verify.compare)."""
    from ..formats.metadata import read_metadata
    from ..verify.compare import compare, gates_for, record_metadata
    from ..verify.parity import check_batch_independence

    base, logits, alone = received(res, item)
    if logits is None:
        return base
    gates = gates_for(item.precision, atol, rtol)
    out = compare(ref_logits, logits, inputs, item.precision, gates,
                  classes=run.classes, runtime=item.runtime, device="cpu")
    if out.shape == list(ref_logits.shape) and alone:
        problem = check_batch_independence(_Alone(alone), inputs, logits, gates)
        out.batch_independent = problem is None
        if problem:
            out.fail(problem)
    out.artifact, out.seconds = str(item.path), None
    record_metadata(out, lambda: read_metadata(item.path), run)
    return out


# ---- bench -------------------------------------------------------------------------------------
@dataclass
class RemoteBench:
    """`tlexport bench --on TARGET`: per file and batch size, latency on the target."""

    target: str
    device: dict
    rows: list[dict]
    skipped: list[dict]
    emulated: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from ..render import json_safe

        return json_safe({"target": self.target, "device": self.device, "emulated": self.emulated,
                          "timings": EMULATED if self.emulated else "measured", "results": self.rows,
                          "skipped": self.skipped, "notes": self.notes})

    def to_markdown(self) -> str:
        head = "| file | runtime | precision | batch | p50 ms | p90 ms | mean ms | img/s | error |\n|---|---|---|---|---|---|---|---|---|\n"
        lines = [f"# bench on {self.target}\n", device_line(self.device) + "\n"]
        if self.emulated:
            lines.append(f"Timings: **{EMULATED}** (an emulated CPU; parity still counts).\n")
        lines.append(head + "".join(
            f"| {r['file']} | {r['runtime']} | {r['precision']} | {r.get('batch_size', '')} | "
            f"{_ms(r.get('p50_ms'))} | {_ms(r.get('p90_ms'))} | {_ms(r.get('mean_ms'))} | "
            f"{_ms(r.get('throughput'))} | {r.get('error') or ''} |\n" for r in self.rows))
        lines += [f"- skipped {s['file']}: {s['reason']}\n" for s in self.skipped]
        return "\n".join(lines)


def _ms(v) -> str:
    return "" if v is None else f"{v:.3g}"


def stats(ms: list) -> dict:
    """p50/p90/p99/mean/min of timed calls in milliseconds (what bench reports)."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError("no finite timings")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "iters": int(a.size)}


def bench_on(on: str, export_dir, options=None, *, progress=None, record=True, **keywords) -> RemoteBench:
    """Time every shippable file of `export_dir` on the target (seeded random inputs of the
    export's crop size), and record p50/p90 per device in its manifest.

    Args:
        options: a `BenchOptions` (runtimes, precisions, batch_sizes, warmup, iters, duration,
            threads are used), or instead its fields as keywords.
    Raises:
        UsageError: bad target or options; RemoteError: the target could not run the agent.
        TypeError: both `options` and keywords, or an unknown keyword.
    """
    from ..benchmark import BenchOptions
    from ..formats.metadata import read_metadata
    from ..keywords import options_or_keywords

    o = options_or_keywords(BenchOptions, options, keywords, "bench_on")
    runtimes, precisions, batch_sizes, warmup = o.runtimes, o.precisions, o.batch_sizes, o.warmup
    iters, duration, threads = o.iters, o.duration, o.threads

    target, export_dir = parse(on), Path(export_dir).expanduser()
    if not export_dir.is_dir():
        raise UsageError(f"export folder {export_dir} does not exist")
    items, skipped = select(export_dir, runtimes, precisions)
    if not items:
        raise UsageError(f"{export_dir} holds no file the agent can run on a target")
    crop = int(read_metadata(items[0].path).get("preprocess", {}).get("crop") or 224)
    batch_sizes = tuple(int(b) for b in batch_sizes) or (1,)
    x = np.random.default_rng(0).standard_normal((max(batch_sizes), 3, crop, crop)).astype(np.float32)
    agent = _agent(target, "bench", items, x, progress, batch_sizes=list(batch_sizes), threads=threads,
                   warmup=10 if warmup in (None, "auto") else int(warmup), iters=iters, duration=duration or 2.0)
    rows = []
    skipped_rows = [{"file": name, "runtime": name, "precision": p, "reason": why} for name, p, why in skipped]
    for res in agent.results:
        base = {k: res.get(k) for k in ("file", "runtime", "precision", "format")}
        if res.get("skipped"):
            skipped_rows.append({**base, "reason": str(res["skipped"])[:500]})
        elif res.get("error"):
            rows.append({**base, "error": str(res["error"])[:500]})
        else:
            rows += _timed_rows(base, res)
    report = RemoteBench(target.text, {"on": target.text, **agent.device}, rows, skipped_rows,
                         bool(agent.device.get("emulated")))
    report.notes.append(f"on {target.where}: {device_line(agent.device)}")
    busy = busy_note(rows, report.emulated)
    if busy:
        report.notes.append(busy)
    if record:
        from .record import record_bench

        note = record_bench(export_dir, target, agent.device, report.rows)
        if note:
            report.notes.append(note)
    return report


def _timed_rows(base: dict, res: dict) -> list[dict]:
    rows = []
    for b in res.get("bench") or []:
        try:
            s, bs = stats(b["ms"]), int(b["batch_size"])
        except (KeyError, TypeError, ValueError) as e:
            rows.append({**base, "error": f"malformed timings from the agent ({e})"})
            continue
        load = b.get("competing_load")
        rows.append({**base, "batch_size": bs, **s, "load_ms": res.get("load_ms"),
                     "throughput": 1000.0 * bs / s["mean_ms"],
                     "competing_load": float(load) if isinstance(load, (int, float)) and not isinstance(load, bool)
                     and math.isfinite(load) else None})
    return rows


def busy_note(rows: list[dict], emulated: bool) -> str | None:
    """A line when other work used more than measure.NOISE_CORES of the target's cores while files
    were timed: those numbers are slower than the device's quiet speed."""
    from ..measure import NOISE_CORES

    loads = [(r["competing_load"], r["file"]) for r in rows if (r.get("competing_load") or 0) > NOISE_CORES]
    if not loads or emulated:
        return None
    worst, name = max(loads)
    return (f"the target was busy while {len(loads)} of {len(rows)} timings ran (up to {worst:.2f} cores of "
            f"other work, during {name}): those numbers are slower than the device's own speed; close "
            "other programs there and run bench --on again")


# ---- predict -----------------------------------------------------------------------------------
def predict_on(on: str, model, images, *, top_k: int = 5, batch_size: int = 16, progress=None):
    """`tlexport predict MODEL IMAGES --on TARGET`: the images are shipped and decoded there.

    MODEL is an artifact file, or an export folder: then the fastest file verified on that
    device (manifest `devices`, from parity and bench --on), else the host's choice (a note
    says which). Returns (PredictResult, notes).
    """
    from ..data.images import iter_image_files
    from ..errors import DataError
    from ..formats.metadata import read_metadata
    from ..inference import resolve_model
    from ..tables.artifacts import BAKED, MODEL, is_folder_artifact, kind_of_file
    from ..tables.metadata import require
    from .record import fastest_on

    if top_k < 1 or batch_size < 1:
        raise UsageError("--top-k and --batch-size must be at least 1")
    target, model, notes = parse(on), Path(model).expanduser(), []
    path = None
    if model.is_dir() and not is_folder_artifact(model):
        path, why = fastest_on(model, target.text)
        if path is None:
            path = resolve_model(model)
            why += f"; running {path.name}, the export's choice on the machine that exported it"
        notes.append(why)
    path = path or resolve_model(model)
    kind = kind_of_file(path)
    runtime = AGENT_RUNTIMES.get(kind.format)
    if runtime is None or kind.role not in (MODEL, BAKED) or (kind.role == BAKED and runtime != "onnxruntime"):
        raise UsageError(f"{path.name}: the agent runs {', '.join(sorted(AGENT_RUNTIMES))} model files only")
    meta = require(read_metadata(path), path)
    files = iter_image_files(images)
    if not files:
        raise DataError("no image files found in " + ", ".join(map(str, images)))
    shipped = {f"{i:06d}{f.suffix.lower()}": f for i, f in enumerate(files)}
    item = Item(path.name, kind.format, kind.precision, runtime, path, _extra_for(path, kind.format))
    job = {"mode": "predict", "items": [item.job()], "preprocess": meta["preprocess"], "images": list(shipped),
           "top_k": min(top_k, len(meta["classes"])), "batch_size": batch_size}
    agent = run_agent(target, job, np.zeros((0,), np.float32), item.files(), progress=progress, images=shipped)
    notes.append(f"on {target.where}: {device_line(agent.device)}")
    return _predictions(path, agent, shipped, meta["classes"]), notes


def _extra_for(path: Path, fmt: str) -> dict:
    from types import SimpleNamespace

    return _extra(SimpleNamespace(path=path, format=fmt))


def _predictions(path: Path, agent: AgentRun, shipped: dict, classes: list):
    from ..inference import PredictResult

    result = PredictResult(path)
    res = agent.results[0] if agent.results else {}
    if res.get("skipped") or res.get("error"):
        from .session import RemoteError

        raise RemoteError(str(res.get("skipped") or res.get("error"))[:500])
    for row in res.get("predictions", []):
        f = shipped.get(row.get("image"))
        if f is None:
            continue
        result.results.append({"image": str(f), "top": [
            {"label": classes[int(i)], "index": int(i), "prob": float(p)} for i, p in row["top"]
            if 0 <= int(i) < len(classes)]})
    result.errors = [{"image": str(shipped.get(e.get("image"), e.get("image"))), "error": str(e.get("error"))[:300]}
                     for e in res.get("errors", [])]
    return result
