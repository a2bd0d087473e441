"""The plug-in contract is written down: every registered format's builder, metadata reader and
runtimes take the parameters of the Protocols (`exporters.job.Builder`, `formats.spec.
MetadataReader`, `runtimes.base.RuntimeFactory`), and discovery hands back those types while
importing a format's code only when asked."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tlexport.exporters.job import Builder
from tlexport.formats import registry
from tlexport.formats.spec import MetadataReader
from tlexport.runtimes.base import RuntimeFactory


def params(call) -> list[tuple[str, object]]:
    """(name, kind) of what a call takes, `self` left out."""
    return [(p.name, p.kind) for p in inspect.signature(call).parameters.values() if p.name != "self"]


def protocol_params(protocol) -> list[tuple[str, object]]:
    return params(protocol.__call__)


@pytest.mark.parametrize("fmt", registry.names())
def test_every_format_package_keeps_the_builder_and_reader_contract(fmt):
    package = registry.get(fmt).package
    build = importlib.import_module(f"{package}.build").build
    read = importlib.import_module(f"{package}.metadata").read
    assert params(build) == protocol_params(Builder), f"{package}.build.build"
    assert params(read) == protocol_params(MetadataReader), f"{package}.metadata.read"


@pytest.mark.parametrize("fmt", registry.names())
def test_a_format_hooks_module_defines_only_the_hooks_the_protocol_names(fmt):
    """A format's steps beyond building are the optional functions of its `hooks` module
    (`exporters.hooks.FormatHooks`), each taking the Protocol's parameters."""
    from tlexport.exporters.hooks import HOOKS, FormatHooks, hooks_of

    module = hooks_of(fmt)
    if module is None:
        return
    public = {n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")}
    exported = set(getattr(module, "__all__", public))
    assert exported <= set(HOOKS), f"{module.__name__}: {sorted(exported - set(HOOKS))} are no hooks"
    for name in exported:
        assert params(getattr(module, name)) == params(getattr(FormatHooks, name)), f"{module.__name__}.{name}"


def test_the_pipeline_names_no_format():
    """Orchestration, verification and publishing know formats only through the registry and
    their hooks: no ONNX module or suffix in them (nor in the tables and reports)."""
    import re
    from pathlib import Path

    root = Path(registry.__file__).parents[1]
    files = [*sorted((root / "exporters").glob("*.py")), root / "render.py", root / "benchmark.py"]
    hits = [f"{f.name}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if re.search(r'formats.onnx|\.onnx"', line)]
    assert not hits, hits


def test_every_runtime_the_registry_holds_is_a_runtime_factory():
    from tlexport import runtimes

    want = protocol_params(RuntimeFactory)
    for name in runtimes.runtime_names():
        factory = runtimes.runtime_class(name)
        assert factory.name == name and isinstance(factory.timed_at_export, bool), name
        assert params(factory.unavailable_reason)[-2:] == params(RuntimeFactory.unavailable_reason), name
        call = factory if inspect.isclass(factory) else factory.__call__
        assert params(call)[: len(want)] == want, name


def test_onnxruntime_provider_rows_are_data_bound_to_one_runtime_class():
    from tlexport import runtimes
    from tlexport.formats.onnx.runtime import PROVIDERS, OnnxRuntime, Provider

    assert not callable(PROVIDERS[0]) and not hasattr(Provider, "timed_at_export")  # a row, not a class
    factory = runtimes.runtime_class("onnxruntime-cuda")
    assert factory.provider is PROVIDERS[1]
    made = factory(None, "fp32")
    assert type(made) is OnnxRuntime and made.device == "cuda" and made.provider is PROVIDERS[1]


def test_naming_the_contract_imports_no_format_code():
    code = ("import sys\n"
            "from tlexport.exporters.job import Builder, Job\n"
            "from tlexport.formats.spec import MetadataReader\n"
            "from tlexport.runtimes.base import RuntimeFactory\n"
            "from tlexport.formats.registry import FORMATS\n"
            "loaded = [m for m in sys.modules if m.startswith('tlexport.formats.') and m.rsplit('.', 1)[-1] in "
            "('build', 'metadata', 'runtime')]\n"
            "print(sorted(loaded), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "False"], out.stdout


def test_no_function_takes_more_than_eight_parameters_except_click_commands():
    """A long parameter list is an options object waiting to be written (#28): only the thin
    Click command functions, which take one parameter per flag, may have more than eight."""
    import ast

    root = Path(__file__).resolve().parents[1] / "tlexport"
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any(".command(" in f".{ast.unparse(d)}" for d in node.decorator_list):
                continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            names = names[1:] if names[:1] in (["self"], ["cls"]) else names
            if len(names) + (a.vararg is not None) + (a.kwarg is not None) > 8:
                long.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    assert not long, long
