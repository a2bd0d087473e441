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


import importlib as _importlib
import sys as _sys
import types as _types


class _Package(_types.ModuleType):
    """`tlexport.train`, `.export`, `.predict`, `.parity`, `.bench` and `.quickstart` are both
    submodules and API functions. Importing a submodule makes Python set it as an attribute of the
    package, which would shadow the function; resolving API names here first keeps
    `from tlexport import train` a function whatever was imported before. Submodules stay
    reachable as `from tlexport.train import ...` and through importlib."""

    def __getattribute__(self, name):
        api = _types.ModuleType.__getattribute__(self, "_API")
        if name in api:
            module, attr = api[name]
            return getattr(_importlib.import_module(module), attr)
        return _types.ModuleType.__getattribute__(self, name)


_sys.modules[__name__].__class__ = _Package
