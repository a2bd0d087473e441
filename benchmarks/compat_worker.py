"""Runs exported files in one runtime of a throwaway environment for benchmarks/compat.py.

Needs only numpy and the runtime (an old onnxruntime, opencv-python-headless, tflite-runtime):
it is started with that environment's python. Never imports tlexport.

    python compat_worker.py onnxruntime|opencv|tflite-runtime|litert JOB.json

JOB.json: {"inputs": {"floats": {"file", "shape"}, "images": [{"file", "shape"}, ...]},
           "models": [{"name", "path", "input": "floats" | "images"}],
           "probes": [{"file", "opset", "ir"}], "out": folder}
Prints one JSON line: {"runtime", "version", "probes": [{"opset", "ir", "loaded"}],
                       "models": {name: {"loaded", "error", "outputs": file}}}
"""

import json
import sys
from pathlib import Path

import numpy as np


def read(entry):
    return np.fromfile(entry["file"], dtype=np.float32 if entry["file"].endswith(".f32") else np.uint8
                       ).reshape(entry["shape"])


class Onnxruntime:
    def __init__(self):
        import onnxruntime as ort

        self.ort, self.version = ort, ort.__version__

    def load(self, path):
        opts = self.ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        return self.ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(self, session, x):
        name = session.get_inputs()[0].name
        return session.run(None, {name: x})[0]


class OpenCV:
    def __init__(self):
        import cv2

        self.cv2, self.version = cv2, cv2.__version__

    def load(self, path):
        return self.cv2.dnn.readNetFromONNX(path)

    def run(self, net, x):
        net.setInput(x)
        return net.forward()


class TfliteRuntime:
    def __init__(self):
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        self.Interpreter, self.version = Interpreter, tflite_runtime.__version__

    def load(self, path):
        it = self.Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        return it

    def run(self, it, x):
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        if list(inp["shape"])[-1] == 3 and list(inp["shape"])[1] != 3:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if list(inp["shape"]) != list(x.shape):  # a file traced at another batch size
            it.resize_tensor_input(inp["index"], list(x.shape))
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


class LiteRT(TfliteRuntime):
    """ai-edge-litert, TFLite's successor: the fresh reference for `.tflite` files."""

    def __init__(self):
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        self.Interpreter, self.version = Interpreter, version("ai-edge-litert")


KINDS = {"onnxruntime": Onnxruntime, "opencv": OpenCV, "tflite-runtime": TfliteRuntime, "litert": LiteRT}


def first_line(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def run_model(rt, model, inputs, out_dir):
    try:
        handle = rt.load(model["path"])
    except Exception as e:
        return {"loaded": False, "error": "load: " + first_line(e)}
    try:
        if model["input"] == "floats":
            xs = [x[None] for x in inputs["floats"]]
        else:
            xs = list(inputs["images"])
        ys = np.concatenate([np.asarray(rt.run(handle, x), np.float32).reshape(1, -1) for x in xs])
    except Exception as e:
        return {"loaded": True, "error": "run: " + first_line(e)}
    dst = Path(out_dir) / f"{model['name']}.f32"
    ys.tofile(dst)
    return {"loaded": True, "error": None, "outputs": {"file": str(dst), "shape": list(ys.shape)}}


def main():
    kind, job_file = sys.argv[1], sys.argv[2]
    job = json.loads(Path(job_file).read_text())
    rt = KINDS[kind]()
    inputs = {"floats": read(job["inputs"]["floats"]), "images": [read(e) for e in job["inputs"]["images"]]}
    result = {"runtime": kind, "version": rt.version, "probes": [], "models": {}}
    for probe in job.get("probes", []):
        try:
            rt.load(probe["file"])
            ok = True
        except Exception:
            ok = False
        result["probes"].append({"opset": probe["opset"], "ir": probe["ir"], "loaded": ok})
    for model in job["models"]:
        result["models"][model["name"]] = run_model(rt, model, inputs, job["out"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
