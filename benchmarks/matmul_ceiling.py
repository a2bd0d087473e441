"""The machine's matrix-multiply ceiling: fp32 GFLOP/s and, where the CPU has VNNI, int8 GOP/s.

A convolutional network cannot run faster than the GEMM kernels under it, so a model's achieved
GFLOP/s is judged against this number, measured on the same machine with the same threads.

On the CPU the kernel is onnxruntime's own GEMM (MLAS) on n x n matrices: MatMul for fp32 and
MatMulInteger (uint8 x int8 -> int32, the pair static int8 models use) for int8. MLAS picks its
kernels by CPU feature (AVX2 / AVX-512 / VNNI / AMX), not by vendor, so the number is honest on
AMD as on Intel; `torch.mm` (MKL) takes a slow path on AMD CPUs (209 GFLOP/s where onnxruntime
ran a whole resnet18 at ~460) and is reported only as a labelled reference with --torch.
numpy (OpenBLAS) is another vendor-neutral reference with --numpy; where OPENBLAS_CORETYPE is
set for an old CPU model it pins a slower kernel, so the value says which core type it ran.
On CUDA, torch.mm (cuBLAS) is the ceiling (TF32 off for a true fp32 number).

Operations are counted as 2 x multiply-accumulates (2 n^3 for an n x n matmul).

Usage: python benchmarks/matmul_ceiling.py [--n 2048] [--reps 10] [--threads N] [--torch] [--numpy]
       python benchmarks/matmul_ceiling.py --device cuda [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tlexport.envinfo from a checkout

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _stats(times: list[float], ops: float) -> dict:
    times = sorted(times)
    return {"best_gflops": round(ops / times[0] / 1e9, 1), "median_gflops": round(ops / times[len(times) // 2] / 1e9, 1)}


def _timed(call, reps: int) -> list[float]:
    for _ in range(2):  # warm-up: packing, thread pool start
        call()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def ort_matmul(n: int, reps: int, threads: int | None, int8: bool) -> dict:
    """onnxruntime MatMul (fp32) or MatMulInteger (uint8 x int8) on n x n matrices."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    if int8:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        types = (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
    else:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        types = (TensorProto.FLOAT,) * 3
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("a", types[0], [n, n])],
                              [helper.make_tensor_value_info("y", types[2], [n, n])],
                              initializer=[helper.make_tensor("b", types[1], [n, n], b.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    times = _timed(lambda: sess.run(None, {"a": a}), reps)
    kernel = "onnxruntime MatMulInteger u8xs8 (MLAS)" if int8 else "onnxruntime MatMul fp32 (MLAS)"
    return {"kernel": kernel, **_stats(times, 2.0 * n ** 3)}


def numpy_matmul(n: int, reps: int) -> dict:
    """numpy's BLAS (OpenBLAS in the wheels) fp32, with the core type it was told to use."""
    import numpy as np

    a, b = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) for _ in range(2))
    kernel = "numpy fp32 (" + (os.environ.get("OPENBLAS_CORETYPE") and f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
                               or "BLAS default core type") + ")"
    return {"kernel": kernel, **_stats(_timed(lambda: a @ b, reps), 2.0 * n ** 3)}


def torch_mm(n: int, reps: int, threads: int | None = None, device: str = "cpu", dtype: str = "float32") -> dict:
    """torch.mm: the ceiling on CUDA; on CPUs a reference only (MKL is slow on AMD)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    # TF32 off for a true fp32 number, and back as it was: the caller's process keeps its setting.
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _time_mm(torch, n, reps, device, dtype)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _time_mm(torch, n: int, reps: int, device: str, dtype: str) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call():
        torch.mm(a, b)
        sync()

    return {"kernel": f"torch.mm {dtype} on {device}", **_stats(_timed(call, reps), 2.0 * n ** 3)}


def matmul_ceiling(n: int = 2048, reps: int = 10, threads: int | None = None, device: str = "cpu",
                   dtype: str = "float32", *, int8: bool = True, with_torch: bool = False,
                   with_numpy: bool = False) -> dict:
    """The ceiling dict: {"n", "reps", "threads", "device", "dtype", "kernel", "best_gflops",
    "median_gflops"} for fp32 (or `dtype` on CUDA), plus on the CPU "cpu_flags", "vnni" and
    "int8" (GOP/s of MatMulInteger, measured everywhere, meaningful as a ceiling with VNNI) and
    the optional references "torch_mm" / "numpy"."""
    from tlexport.envinfo import cpu_flags, usable_cores

    base = {"n": n, "reps": reps, "threads": threads or usable_cores(), "device": device, "dtype": dtype}
    if device != "cpu":
        return {**base, **torch_mm(n, reps, threads, device, dtype)}
    flags = cpu_flags()
    out = {**base, **ort_matmul(n, reps, threads, int8=False), "cpu_flags": flags,
           "vnni": any(f in flags for f in VNNI_FLAGS)}
    if int8:
        out["int8"] = ort_matmul(n, reps, threads, int8=True)
    if with_torch:
        out["torch_mm"] = torch_mm(n, reps, threads)
    if with_numpy:
        out["numpy"] = numpy_matmul(n, reps)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--torch", action="store_true", help="also torch.mm as a reference (CPU)")
    ap.add_argument("--numpy", action="store_true", help="also numpy/OpenBLAS as a reference (CPU)")
    a = ap.parse_args()
    print(json.dumps(matmul_ceiling(a.n, a.reps, a.threads, a.device, a.dtype, with_torch=a.torch,
                                    with_numpy=a.numpy), indent=2))
