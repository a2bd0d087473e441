"""The machine's fp32 matrix-multiply ceiling in GFLOP/s (torch.mm on large square matrices).

A convolutional network cannot run faster than the GEMM kernels under it, so the achieved GFLOP/s
of a model is judged against this number, measured on the same machine with the same threads.
FLOPs counted as 2 x multiply-accumulates (2 n^3 for an n x n matmul).

Usage: python benchmarks/matmul_ceiling.py [--n 2048] [--reps 10] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time


def matmul_ceiling(n: int = 2048, reps: int = 10, threads: int | None = None, device: str = "cpu",
                   dtype: str = "float32") -> dict:
    """Best and median GFLOP/s of an n x n @ n x n matmul (after 2 warm-up calls).

    Args:
        n: matrix side; 2048 is large enough to reach peak on CPUs, use 8192 on GPUs.
        reps: timed repetitions.
        threads: torch intra-op threads (None: torch's default).
        dtype: "float32" (TF32 disabled on CUDA so it is a true fp32 number) or "float16".
    Returns:
        {"n", "reps", "threads", "device", "dtype", "best_gflops", "median_gflops"}
    """
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
    dt = getattr(torch, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        torch.mm(a, b)
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    flops = 2.0 * n ** 3
    return {"n": n, "reps": reps, "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
            "best_gflops": round(flops / times[0] / 1e9, 1),
            "median_gflops": round(flops / times[len(times) // 2] / 1e9, 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = ap.parse_args()
    print(json.dumps(matmul_ceiling(a.n, a.reps, a.threads, a.device, a.dtype), indent=2))
