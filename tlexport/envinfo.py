"""Environment capture for reports: what machine and library versions produced the numbers.

Numbers without their machine are meaningless, so bench and parity reports embed this dict.
Everything here is best effort: a missing library or an unreadable /proc file gives `None`,
never an exception. Importing this module is cheap and torch-free; torch is only asked for its
version and GPU when it is already importable.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
import sys

LIBRARIES = ("torch", "torchvision", "onnxruntime", "onnx", "openvino", "numpy")


def cpu_model() -> str | None:
    """The CPU's marketing name (Linux /proc/cpuinfo, macOS sysctl, else platform.processor)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def cpu_flags() -> list[str]:
    """The SIMD features that decide int8/bf16 speed (avx2, avx512*, amx*, vnni), Linux only."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    keep = re.compile(r"^(avx2|avx512\w*|amx\w*|avx_vnni\w*|fma|f16c)$")
                    return sorted(f for f in flags if keep.match(f))
    except OSError:
        pass
    return []


def usable_cores() -> int | None:
    """Cores this process may run on (respects taskset / cgroups affinity where available)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def library_version(name: str) -> str | None:
    """`name.__version__` if the library imports, else None."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # ImportError, or a broken install raising something else
        return None
    version = getattr(mod, "__version__", None)
    if version is None and name == "openvino":
        try:
            version = mod.get_version()
        except Exception:
            version = None
    return str(version) if version is not None else None


def versions(names=LIBRARIES) -> dict:
    """tlexport's, Python's and each named library's version (None where it is not installed):
    the one place versions are captured, for run.json, manifests and reports."""
    from . import __version__

    out = {"tlexport": __version__, "python": platform.python_version()}
    out.update({name: library_version(name) for name in names})
    return out


def gpu_info() -> dict:
    """CUDA GPU name, count, driver and CUDA runtime versions ({} without a usable GPU)."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    info = {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": None,
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
    }
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return info


def load_average() -> list[float] | None:
    """1/5/15-minute load average: tells a reader whether the machine was busy while timing."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(threads: int | None = None) -> dict:
    """Everything a reader needs to judge a number: CPU, cores, threads, GPU, versions, OS, load.

    Args:
        threads: the intra-op thread count used for the measurement (None: library default).
    Returns:
        A JSON-serialisable dict.
    """
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    from . import __version__

    return {
        "tlexport": __version__,
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads if threads is not None else torch_threads,
        "torch_threads": torch_threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": gpu_info() or None,
        "versions": {name: library_version(name) for name in LIBRARIES},
        "load_average": load_average(),
    }
