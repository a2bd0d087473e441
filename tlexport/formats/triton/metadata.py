"""Triton metadata: the repository's model is tlexport's ONNX file, metadata inside."""

from ..onnx.metadata import read

__all__ = ["read"]
