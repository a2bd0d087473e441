"""LiteRT's export hooks: which tflite-runtime releases load its `.tflite` files."""

from ..onnx.hooks import describe_compat as describe

__all__ = ["describe"]
