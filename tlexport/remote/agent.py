"""The torch-free agent that runs on a target (a board over ssh, an emulated ARM root, a container).

It is shipped, with the artifacts and the inputs, in one zip written to the agent's stdin, and
must run on Python 3.8+ with only the standard library, numpy and the runtime of each file: it
never imports tlexport, torch, or anything that the artifacts could name (TorchScript and .pt2
are never shipped). It talks JSON lines on its stdout (see `emit`): `hello` (its folder and pid,
so that the host can clean up even after a SIGKILL), `device`, `ready`, one `result` per file,
`done`, or `error` with one line. The boot code sends library output on fd 1 to stderr so it
cannot corrupt the stream. Its feeding of each runtime mirrors tlexport's host runtimes (formats/*/runtime.py):
the same layout, dtype, fixed-batch padding and int8 (de)quantization.

This module is also the boot code's target: `main(folder)` is called after the zip has been
unpacked into `folder` (a fresh `tempfile.mkdtemp`), which the boot code removes afterwards.
"""

import base64
import json
import os
import platform
import sys
import time

PREFIX = "@tlexport "
BATCH_CHECK_IMAGES = 3
_OUT = None
X86 = ("x86_64", "amd64", "i386", "i686")
ARM = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")
# What to pip install on the target for each runtime (import name -> (pip name, what it runs)).
RUNTIME_PACKAGES = {
    "onnxruntime": ("onnxruntime", ".onnx / .ort"),
    "litert": ("ai-edge-litert", ".tflite (or tflite-runtime)"),
    "ncnn": ("ncnn", "ncnn folders"),
    "openvino": ("openvino", "OpenVINO IR"),
}


def emit(event, **fields):
    """One JSON line on the saved stdout, flushed (the host reads line by line)."""
    fields["event"] = event
    _OUT.write(PREFIX + json.dumps(fields) + "\n")
    _OUT.flush()


# ---- the device --------------------------------------------------------------------------------
def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read(1 << 20)
    except OSError:
        return ""


def _field(text, *names):
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in names and value.strip():
            return value.strip()
    return None


def _isa(flags):
    """The features that decide int8/fp16 speed: NEON/asimddp/i8mm/fphp on ARM, AVX2/AVX-512/VNNI on x86."""
    keep = ("neon", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2", "sme",
            "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "avx512_fp16", "amx_int8", "amx_bf16")
    return [f for f in keep if f in flags]


def describe(threads=None):
    """machine, CPU model, ISA features, cores, OS, Python, runtime versions, emulation."""
    info = _cpuinfo()
    machine = platform.machine().lower()
    flags = set((_field(info, "flags", "features") or "").split())
    cpu_x86 = _field(info, "vendor_id") is not None or "sse2" in flags
    cpu_arm = _field(info, "cpu implementer") is not None or "asimd" in flags
    emulated = (machine in ARM and cpu_x86) or (machine in X86 and cpu_arm)
    model = _field(info, "model name") or _field(info, "model", "hardware")
    try:
        with open("/proc/device-tree/model") as f:
            model = f.read(200).strip("\x00\n ") or model
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    isa = _isa(flags)
    return {  # emulated: /proc/cpuinfo is the host's, so its CPU and features are not the target's
        "hostname": platform.node(), "machine": machine, "cpu": ("emulated on " + str(model)) if emulated else model,
        "isa": [] if emulated else isa, "host_isa": isa if emulated else None,
        "cpuinfo_isa": "x86" if cpu_x86 else "arm" if cpu_arm else None,
        "cores": cores, "threads": threads or cores, "os": _os_name(), "kernel": platform.release(),
        "python": platform.python_version(), "python_path": sys.executable,
        "versions": _versions(), "emulated": emulated, "machine_id": _machine_id(),
        "emulated_why": ("platform.machine() is %s but /proc/cpuinfo describes a%s CPU (qemu-user?)"
                         % (machine, "n x86" if cpu_x86 else "n ARM")) if emulated else None,
    }


def _machine_id():
    """A short digest of /etc/machine-id (unique per installed system): two boards that share a
    hostname (every Raspberry Pi starts as "raspberrypi") are two devices. The id itself is not sent."""
    import hashlib

    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                text = f.read(256).strip()
        except OSError:
            continue
        if text:
            return hashlib.sha256(("tlexport-device:" + text).encode()).hexdigest()[:8]
    return None


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _versions():
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python < 3.8 never gets here (the boot code refuses it)
        return {}
    out = {}
    for dist in ("numpy", "Pillow", "onnxruntime", "ai-edge-litert", "tflite-runtime", "ncnn", "openvino"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


# ---- runners: load once, run float32 NCHW batches --------------------------------------------------
class Unavailable(Exception):
    """The file cannot run here (runtime missing, layout for another CPU): a skip with a reason."""


def _missing(runtime):
    pip, what = RUNTIME_PACKAGES[runtime]
    return Unavailable("%s (%s) is not installed on the target: %s" % (pip, what, install_line(pip)))


def install_line(packages):
    """The command that installs `packages` for this interpreter: pip, or, where the system's
    Python refuses pip (PEP 668: Debian 12, Raspberry Pi OS, Ubuntu 23.04+), a venv to name with
    #python=."""
    import sysconfig

    managed = sys.prefix == getattr(sys, "base_prefix", sys.prefix) and \
        os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    if not managed:
        return "%s -m pip install %s" % (sys.executable, packages)
    wanted = ["numpy", "pillow"] + [p for p in packages.split() if p not in ("numpy", "pillow")]
    return ("python3 -m venv ~/tlx && ~/tlx/bin/pip install %s%s, then add #python=~/tlx/bin/python to --on "
            "(this system's Python refuses pip)" % (" ".join(wanted), " and your files' runtimes"
                                                     if packages == "numpy" else ""))


class OnnxRunner:
    """onnxruntime's CPU provider on an .onnx or .ort file (runtime onnxruntime)."""

    def __init__(self, path, item, threads):
        try:
            import onnxruntime as ort
        except ImportError:
            raise _missing("onnxruntime") from None
        if path.endswith(".ort"):
            _refuse_foreign_ort(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name, self.shape = inp.name, list(inp.shape)
        import numpy as np

        self.dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        self.output = self.session.get_outputs()[0].name
        self.uint8_input = len(self.shape) == 3  # model.uint8.onnx: it resizes, crops, normalises
        first = self.shape[0] if self.shape else None
        self.fixed_batch = first if isinstance(first, int) and first > 0 and len(self.shape) == 4 else None

    def run(self, batch):
        import numpy as np

        if len(self.shape) == 3:  # model.uint8.onnx: one decoded [H, W, 3] image per call
            return np.concatenate([self._call(image) for image in batch])
        return self._call(batch)

    def _call(self, x):
        import numpy as np

        out = self.session.run([self.output], {self.name: x.astype(self.dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)


def _refuse_foreign_ort(path):
    """An .ort saved with onnxruntime's x86 NCHWc layout (--ort-target amd64) loads only on x86."""
    with open(path, "rb") as f:
        data = f.read()
    # Nodes in that layout: kernels of the "com.microsoft.nchwc:" domain and Reorder ops (a portable
    # file still lists the domain name among its opsets, without a colon: not a sign of it).
    nchwc = b"com.microsoft.nchwc:" in data or b"ReorderInput" in data or b"ReorderOutput" in data
    if nchwc and platform.machine().lower() not in X86:
        raise Unavailable("%s holds onnxruntime's x86 NCHWc layout (exported with --ort-target amd64), which "
                          "loads only on x86 CPUs; this target is %s: export with --ort-target portable"
                          % (os.path.basename(path), platform.machine()))


class LiteRTRunner:
    """A .tflite file in ai_edge_litert's (or tflite_runtime's) Interpreter, as formats/tflite/runtime.py."""

    def __init__(self, path, item, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
            except ImportError:
                raise _missing("litert") from None
        self.interpreter = Interpreter(model_path=path, num_threads=int(threads) if threads else None)
        shape = list(self.interpreter.get_input_details()[0]["shape"])
        self.nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        self.batch = None
        self.fixed_batch = None

    def run(self, x):
        import numpy as np

        inp = self.interpreter.get_input_details()[0]
        if self.batch != len(x):
            want = [len(x), x.shape[2], x.shape[3], x.shape[1]] if self.nhwc else list(x.shape)
            if list(inp["shape"]) != want:
                self.interpreter.resize_tensor_input(inp["index"], want)
            self.interpreter.allocate_tensors()
            self.batch = len(x)
            inp = self.interpreter.get_input_details()[0]
        if self.nhwc:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        self.interpreter.set_tensor(inp["index"], _quantize(x, inp))
        self.interpreter.invoke()
        out = self.interpreter.get_output_details()[0]
        return _dequantize(self.interpreter.get_tensor(out["index"]), out)


def _quantize(x, detail):
    import numpy as np

    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    import numpy as np

    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


class NcnnRunner:
    """A model.ncnn folder, image by image, with fp16 storage/arithmetic for fp16 folders only
    (formats/ncnn/runtime.py: on ARM ncnn's defaults would compute an fp32 model in fp16)."""

    def __init__(self, path, item, threads):
        try:
            import ncnn
        except ImportError:
            raise _missing("ncnn") from None
        self.ncnn = ncnn
        self.net = ncnn.Net()
        fp16 = item["precision"] == "fp16"
        for name in ("use_winograd_convolution", "use_sgemm_convolution", "use_packing_layout"):
            setattr(self.net.opt, name, True)
        for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
            setattr(self.net.opt, name, fp16)
        self.net.opt.use_bf16_storage = False
        if threads:
            self.net.opt.num_threads = int(threads)
        if self.net.load_param(os.path.join(path, "model.param")) != 0 or \
                self.net.load_model(os.path.join(path, "model.bin")) != 0:
            raise RuntimeError("ncnn cannot load %s" % os.path.basename(path))
        self.input, self.output = item["ncnn_input"], item["ncnn_output"]
        self.fixed_batch = None

    def run(self, batch):
        import numpy as np

        rows = []
        for chw in batch:
            image = np.ascontiguousarray(chw, dtype=np.float32)  # alive until extract has run
            ex = self.net.create_extractor()
            ex.input(self.input, self.ncnn.Mat(image))
            ret, out = ex.extract(self.output)
            if ret != 0:
                raise RuntimeError("ncnn could not compute %s (extract returned %d)" % (self.output, ret))
            rows.append(np.array(out, dtype=np.float32).reshape(-1))
        return np.stack(rows)


class OpenVINORunner:
    """OpenVINO's CPU plugin on an IR (model.xml + .bin), latency mode, f32 hint except fp16."""

    def __init__(self, path, item, threads):
        try:
            import openvino as ov
        except ImportError:
            raise _missing("openvino") from None
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        if item["precision"] in ("fp32", "int8"):
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        self.fixed_batch = None

    def run(self, batch):
        import numpy as np

        out = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[self.compiled.output(0)]
        return np.array(out, dtype=np.float32, copy=True)


RUNNERS = {"onnx": OnnxRunner, "ort": OnnxRunner, "tflite": LiteRTRunner, "ncnn": NcnnRunner,
           "openvino": OpenVINORunner}


def run_batch(runner, batch):
    """runner.run, in padded chunks for a fixed-batch graph (as runtimes/base.py)."""
    import numpy as np

    size = runner.fixed_batch
    if size is None or len(batch) == size:
        return runner.run(batch)
    out = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        out.append(runner.run(padded)[:len(chunk)])
    return np.concatenate(out)


def encode(array):
    import numpy as np

    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(a.shape), "f32": base64.b64encode(a.tobytes()).decode("ascii")}


# ---- the work -------------------------------------------------------------------------------------
def parity_item(runner, inputs, batch_size):
    """Logits of every input (batches of batch_size), and of the first few images run alone."""
    import numpy as np

    logits = [run_batch(runner, inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    alone = [run_batch(runner, inputs[i:i + 1]) for i in range(min(BATCH_CHECK_IMAGES, len(inputs)))]
    return {"logits": encode(np.concatenate(logits)), "alone": [encode(a) for a in alone]}


def pixels_item(runner, folder, names):
    """A model that takes one decoded uint8 [H, W, 3] image (model.uint8.onnx): the very pixels the
    host decoded (images/NAME.npy, read without pickle), one call per image."""
    import numpy as np

    pixels = [np.load(os.path.join(folder, "images", name), allow_pickle=False) for name in names]
    if any(p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3 for p in pixels):
        raise ValueError("the shipped pixels are not uint8 [H, W, 3] images")
    return {"logits": encode(np.concatenate([runner.run([p]) for p in pixels]))}


def bench_item(runner, inputs, batch_sizes, warmup, iters, duration):
    """Per batch size: untimed warm-up calls, then timed calls (a count, or a time budget)."""
    rows = []
    for bs in batch_sizes:
        x = inputs[:bs]
        while len(x) < bs:  # fewer inputs than the batch: repeat them
            x = __import__("numpy").concatenate([x, inputs[:bs - len(x)]])
        for _ in range(warmup):
            run_batch(runner, x)
        times, start, ticks = [], time.perf_counter(), _ticks()
        while len(times) < (iters or 10) or (not iters and time.perf_counter() - start < duration):
            t0 = time.perf_counter()
            run_batch(runner, x)
            times.append((time.perf_counter() - t0) * 1000.0)
        rows.append({"batch_size": bs, "ms": times, "competing_load": _competing(ticks, _ticks(),
                                                                                time.perf_counter() - start)})
    return {"bench": rows}


def _ticks():
    """(busy CPU ticks of the whole machine, this process's own) from /proc, or None (not Linux)."""
    try:
        with open("/proc/stat") as f:
            v = [int(n) for n in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return sum(v[:8]) - v[3] - v[4], int(rest[11]) + int(rest[12])
    except (OSError, ValueError, IndexError):
        return None


def _competing(before, after, seconds):
    """Cores that other processes used while this file was timed (as tlexport/measure.py)."""
    if before is None or after is None or seconds <= 0:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    other = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(0.0, other / hz / seconds), 3)


def run_item(item, folder, inputs, job):
    """One file: load its runner, then parity or bench; a skip or an error is that file's result."""
    path = os.path.join(folder, "files", item["file"])
    result = {"file": item["file"], "format": item["format"], "precision": item["precision"],
              "runtime": item["runtime"]}
    try:
        t0 = time.perf_counter()
        runner = RUNNERS[item["format"]](path, item, job.get("threads"))
        result["load_ms"] = (time.perf_counter() - t0) * 1000.0
    except Unavailable as e:
        result["skipped"] = str(e)
        return result
    except Exception as e:  # noqa: BLE001 - reported per file, the others still run
        result["error"] = "cannot load: " + _one_line(e)
        return result
    try:
        if job["mode"] == "parity" and item.get("pixels"):
            result.update(pixels_item(runner, folder, item["pixels"]))
        elif job["mode"] == "parity":
            result.update(parity_item(runner, inputs, job["batch_size"]))
        elif job["mode"] == "predict":
            result.update(predict_item(runner, folder, job))
        else:
            result.update(bench_item(runner, inputs, job["batch_sizes"], job["warmup"], job.get("iters"),
                                     job.get("duration") or 2.0))
    except Exception as e:  # noqa: BLE001
        result["error"] = "failed while running: " + _one_line(e)
    return result


def _one_line(e):
    """Type, first line and (OpenVINO puts the reason last, under "Exception from ..." lines) the
    last line of an exception's message."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0][:200] if lines else ""
    if len(lines) > 1:
        text += " ... " + lines[-1][:300]
    return "%s: %s" % (type(e).__name__, text)


def predict_item(runner, folder, job):
    """Decode the shipped images here with tlexport's own decoder (data/images.py, shipped as shipped_images.py
    beside the agent): the target's Pillow and libjpeg are part of what predict answers for."""
    import numpy as np
    import shipped_images as images  # tlexport/data/images.py, shipped beside the agent

    pre, rows, errors, batch, names = job["preprocess"], [], [], [], []
    uint8 = getattr(runner, "uint8_input", False)  # decoded images of any size, one per call

    def flush():
        if batch:
            logits = np.concatenate([runner.run([x]) for x in batch]) if uint8 else run_batch(runner, np.stack(batch))
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = z / z.sum(axis=1, keepdims=True)
            for name, p in zip(names, probs):
                top = np.argsort(-p)[:job["top_k"]]
                rows.append({"image": name, "top": [[int(i), float(p[i])] for i in top]})
            del batch[:], names[:]

    for name in job["images"]:
        try:
            path = os.path.join(folder, "images", name)
            batch.append(np.asarray(images.open_rgb(path, min_side=pre["resize"])) if uint8
                         else images.load_input(path, pre))
            names.append(name)
        except Exception as e:  # noqa: BLE001 - an unreadable image is that image's error
            errors.append({"image": name, "error": "%s: %s" % (type(e).__name__, str(e)[:200])})
        if len(batch) >= job["batch_size"]:
            flush()
    flush()
    return {"predictions": rows, "errors": errors}


def main(folder, events):
    """Run the job in `folder` (job.json, inputs.npy, files/), writing events to `events` (the
    boot code's copy of the original stdout; fd 1 itself already goes to stderr)."""
    global _OUT
    _OUT = events
    try:
        import numpy  # noqa: F401 - only whether the target has it: the files run in child processes
    except ImportError:
        emit("error", kind="numpy", message="numpy is not installed on the target: %s" % install_line("numpy"))
        return 3
    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    emit("device", device=describe(job.get("threads")))
    emit("ready")  # each file runs in its own process, which maps inputs.npy itself
    for index, item in enumerate(job["items"]):
        emit("start", file=item["file"])
        emit("result", result=run_isolated(index, item, folder))
    emit("done")
    return 0


# ---- one process per file: a runtime that crashes takes only its own file with it -----------------
CHILD = ("import sys; sys.dont_write_bytecode = True; sys.path.insert(0, sys.argv[1]); "
         "import tlexport_agent; sys.exit(tlexport_agent.child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))")


def run_isolated(index, item, folder):
    """Run one file in a child Python (same interpreter, cwd in the folder, dies with this process):
    a runtime that segfaults or aborts while loading or running a file is that file's error, and
    the other files still run."""
    import signal
    import subprocess

    out = os.path.join(folder, "result-%d.json" % index)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, folder, str(index), str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=2, cwd=folder)
    code = proc.wait()
    try:
        with open(out) as f:
            result = json.load(f)
        os.remove(out)
        return result
    except (OSError, ValueError):
        pass
    result = {"file": item["file"], "format": item["format"], "precision": item["precision"],
              "runtime": item["runtime"]}
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal %d" % -code
        result["error"] = ("the runtime crashed (%s) while loading or running it; the other files still ran"
                           % name)
    else:
        result["error"] = "its process ended with code %d before a result (see the target's stderr)" % code
    return result


def child(folder, index, parent):
    """The child side of run_isolated: die with the agent, run the file, write its result."""
    _die_with(parent)
    import numpy as np

    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    inputs = np.load(os.path.join(folder, "inputs.npy"), mmap_mode="r", allow_pickle=False)
    result = run_item(job["items"][index], folder, inputs, job)
    path = os.path.join(folder, "result-%d.json" % index)
    with open(path + ".part", "w") as f:
        json.dump(result, f)
    os.replace(path + ".part", path)
    return 0


def _die_with(parent):
    """Linux: SIGKILL this process when the agent goes (the host's cleanup kills the agent); then
    make sure the agent had not already gone."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(4)
