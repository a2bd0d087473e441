"""tlexport: fine-tune a torchvision classifier, export it, check parity, benchmark, predict.

The Python API mirrors the CLI. Names are resolved lazily (module `__getattr__`), so
`import tlexport` stays cheap and torch-free (the ONNX predict path must not import torch). No
API name is also a submodule name, so importing a submodule never shadows a function.
"""

import importlib as _importlib

__version__ = "0.2.0"

_API = {
    "train": ("tlexport.training.loop", "train"),
    "resume": ("tlexport.training.loop", "resume"),
    "TrainConfig": ("tlexport.training.config", "TrainConfig"),
    "evaluate": ("tlexport.training.evaluate", "evaluate"),
    "scan": ("tlexport.data.folders", "scan"),
    "load_run": ("tlexport.models", "load_run"),
    "Preprocess": ("tlexport.data.preprocess", "Preprocess"),
    "export": ("tlexport.exporters.pipeline", "export"),
    "ExportOptions": ("tlexport.exporters.options", "ExportOptions"),
    "predict": ("tlexport.inference", "predict"),
    "parity": ("tlexport.verify.parity", "parity"),
    "ParityOptions": ("tlexport.verify.parity", "ParityOptions"),
    "bench": ("tlexport.benchmark", "bench"),
    "BenchOptions": ("tlexport.benchmark", "BenchOptions"),
    "quickstart": ("tlexport.demo", "quickstart"),
    "archs": ("tlexport.tables.archs", "registry"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        return getattr(_importlib.import_module(module), attr)
    raise AttributeError(f"module 'tlexport' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
