"""The package's floors: data flows train -> run dir -> export -> manifest -> runtimes ->
parity / bench / predict, and no import runs back up (or in a circle). Every import counts,
also those inside functions: a lazy import upward is still a dependency upward.

A format package (`tlexport/formats/<name>/`) spans floors, by submodule name: its spec (the
package itself) and metadata reader sit with the tables, its `runtime` on the runtimes floor,
its `build` and every other helper module on the exporters floor (`FORMAT_FLOORS`)."""

from __future__ import annotations

import ast
from pathlib import Path

import tlexport

ROOT = Path(tlexport.__file__).parent

# Lowest floor first. A module may import its own floor and any floor below.
FLOORS = [
    ("tlexport", "tlexport.errors", "tlexport.fileio", "tlexport.envinfo", "tlexport.render", "tlexport.measure",
     "tlexport.progress", "tlexport.quiet", "tlexport.procs", "tlexport.keywords",
     "tlexport.browser"),
    ("tlexport.run",),  # the run folder: every floor above reads or writes runs through it
    ("tlexport.data", "tlexport.tables", "tlexport.formats"),
    ("tlexport.models",),
    ("tlexport.training",),
    ("tlexport.runtimes",),
    ("tlexport.verify",),
    ("tlexport.exporters",),
    ("tlexport.benchmark", "tlexport.inference", "tlexport.remote"),
    ("tlexport.demo",),
    ("tlexport.cli", "tlexport.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Submodules of a format package by name -> the floor they sit on (any other name: exporters).
FORMAT_FLOORS = {"": "tlexport.formats", "metadata": "tlexport.formats", "runtime": "tlexport.runtimes"}
FORMAT_PACKAGES = {p.name for p in (ROOT / "formats").iterdir() if (p / "__init__.py").is_file()}


def format_floor(module: str) -> str | None:
    """The floor name of `tlexport.formats.<name>[.<sub>]`, by the submodule's name."""
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["tlexport", "formats"] or parts[2] not in FORMAT_PACKAGES:
        return None
    return FORMAT_FLOORS.get(".".join(parts[3:]), "tlexport.exporters")


def floor_of(module: str) -> int:
    module = format_floor(module) or module
    best = None
    for i, names in enumerate(FLOORS):
        for name in names:
            if module == name or (name != "tlexport" and module.startswith(name + ".")):
                best = i
    if best is None and module == "tlexport":
        best = 0
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best


def imports_of(path: Path) -> set[str]:
    """tlexport modules imported anywhere in the file (absolute or relative)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tlexport")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tlexport"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                out.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                        or (ROOT.parent / sub.replace(".", "/")).is_dir() else target)
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_no_import_runs_up_a_floor():
    upward = [f"{m} (floor {floor_of(m)}) imports {t} (floor {floor_of(t)})"
              for m, targets in graph().items() for t in sorted(targets) if floor_of(t) > floor_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    # A package importing its own submodules (an __init__ re-exporting them) is not a cycle of
    # dependencies between floors; drop those edges, keep everything else.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, ()):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_floor_table_knows_every_module():
    for m in graph():
        floor_of(m)


def test_a_format_package_spans_floors_by_submodule_name():
    """The rule the format packages rely on: their spec and reader are importable from the
    tables, their runtime from the runtimes, their builder only from the exporters upward."""
    assert {"onnx", "tflite"} <= FORMAT_PACKAGES
    low, runtimes, exporters = (floor_of(n) for n in ("tlexport.tables", "tlexport.runtimes", "tlexport.exporters"))
    assert floor_of("tlexport.formats.onnx") == floor_of("tlexport.formats.onnx.metadata") == low
    assert floor_of("tlexport.formats.registry") == floor_of("tlexport.formats.spec") == low
    assert floor_of("tlexport.formats.onnx.runtime") == runtimes
    assert floor_of("tlexport.formats.onnx.build") == floor_of("tlexport.formats.onnx.quantize") == exporters
