"""Triton's export hooks: its model is an `.onnx` file, described as ONNX describes one."""

from ..onnx.hooks import describe

__all__ = ["describe"]
