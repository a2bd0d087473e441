"""Checking artifacts against PyTorch: inputs (the images), compare (pure numpy metrics and
gates) and parity (running every runtime and collecting a report)."""
