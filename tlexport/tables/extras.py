"""The optional packages: which ones each format needs to be exported, and the one install hint
per package that every message naming it uses (export refuses a format before any heavy work;
runtimes and metadata readers say the same when they cannot load)."""

from __future__ import annotations

import importlib.util

from ..errors import UsageError

EDGE_EXTRA = "pip install -e '.[edge]'"
# ExecuTorch's wheel declares heavy dependencies it does not need to export or run (coremltools,
# pandas, scikit-learn, hydra): it is installed on its own, without them.
EXECUTORCH_PIP = "pip install --no-deps executorch==1.5.1"

# import name -> the pip command that provides it
PIP: dict[str, str] = {
    "executorch": f"{EXECUTORCH_PIP} && {EDGE_EXTRA}",
    "torchao": EDGE_EXTRA,
    "ruamel": EDGE_EXTRA,
    "litert_torch": f"{EDGE_EXTRA} (or pip install litert-torch==0.10.0)",
    "ai_edge_litert": f"{EDGE_EXTRA} (or pip install ai-edge-litert==2.3.0)",
    "openvino": "pip install -e '.[openvino]' (or pip install openvino)",
    "tritonclient": f"{EDGE_EXTRA} (or pip install tritonclient==2.73.0)",
}
# format -> the import names its exporter needs
NEEDS: dict[str, tuple[str, ...]] = {
    "executorch": ("executorch", "torchao", "ruamel"),
    "tflite": ("litert_torch", "ai_edge_litert"),
    "openvino": ("openvino",),
    "triton": ("tritonclient",),
}


def not_installed(module: str, what: str | None = None) -> str:
    """"<what> needs the Python package 'module', which is not installed: <pip command>"."""
    return f"{what or module} needs the Python package '{module}', which is not installed: {PIP[module]}"


def missing(fmt: str) -> str | None:
    """The one-line reason `--format fmt` cannot be exported here, naming the pip command."""
    for module in NEEDS.get(fmt, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return not_installed(module, f"--format {fmt}")
    return None


def require(formats) -> None:
    """UsageError naming the first missing extra of `formats`."""
    for fmt in formats:
        reason = missing(fmt)
        if reason:
            raise UsageError(reason)
