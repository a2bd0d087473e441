"""ORT mobile's export hooks: which onnxruntime releases load its `.ort` files (its builder sets
the opset and inputs from the source ONNX)."""

from ..onnx.hooks import describe_compat as describe

__all__ = ["describe"]
