"""Export: the pipeline (stage -> build -> verify -> publish) and one module per format (onnx,
torchscript, pt2), plus quantize (fp16/int8 ONNX) and baked (uint8 NHWC input variant)."""
