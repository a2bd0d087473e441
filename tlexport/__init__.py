"""tlexport: fine-tune a torchvision ResNet, export it, check parity, benchmark, predict.

The Python API mirrors the CLI. Names are imported lazily so `import tlexport` stays cheap and
torch-free (the ONNX predict path must not import torch).
"""

__version__ = "0.1.0"

_API = {
    "train": ("tlexport.train", "train"),
    "TrainConfig": ("tlexport.train", "TrainConfig"),
    "evaluate": ("tlexport.evaluate", "evaluate"),
    "scan": ("tlexport.data", "scan"),
    "load_run": ("tlexport.models", "load_run"),
    "Preprocess": ("tlexport.preprocess", "Preprocess"),
    "export": ("tlexport.export", "export"),
    "predict": ("tlexport.predict", "predict"),
    "parity": ("tlexport.parity", "parity"),
    "bench": ("tlexport.bench", "bench"),
    "quickstart": ("tlexport.quickstart", "quickstart"),
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tlexport' has no attribute {name!r}")
