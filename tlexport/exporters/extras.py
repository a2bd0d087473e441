"""The optional extras the edge and serving formats need, and the one-line message that says
exactly what to install when one is missing. Checked before any heavy work."""

from __future__ import annotations

import importlib.util

from ..errors import UsageError

EDGE_EXTRA = "pip install -e '.[edge]'"
# ExecuTorch's wheel declares heavy dependencies it does not need to export or run (coremltools,
# pandas, scikit-learn, hydra): it is installed on its own, without them.
EXECUTORCH_PIP = "pip install --no-deps executorch==1.5.1"

# format -> [(import name, pip command that provides it)]
NEEDS: dict[str, list[tuple[str, str]]] = {
    "executorch": [("executorch", f"{EXECUTORCH_PIP} && {EDGE_EXTRA}"), ("torchao", EDGE_EXTRA),
                   ("ruamel", EDGE_EXTRA)],
    "tflite": [("litert_torch", f"{EDGE_EXTRA} (or pip install litert-torch==0.10.0)"),
               ("ai_edge_litert", f"{EDGE_EXTRA} (or pip install ai-edge-litert==2.3.0)")],
    "openvino": [("openvino", "pip install -e '.[openvino]' (or pip install openvino)")],
    "triton": [("tritonclient", f"{EDGE_EXTRA} (or pip install tritonclient==2.73.0)")],
}


def missing(fmt: str) -> str | None:
    """The one-line reason `--format fmt` cannot be exported here, naming the pip command."""
    for module, pip in NEEDS.get(fmt, []):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"--format {fmt} needs the Python package '{module}', which is not installed: {pip}"
    return None


def require(formats) -> None:
    """UsageError naming the first missing extra of `formats`."""
    for fmt in formats:
        reason = missing(fmt)
        if reason:
            raise UsageError(reason)
