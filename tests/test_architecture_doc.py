"""The map a contributor opens first is true: docs/architecture.md and docs/adding-a-format.md name
only paths and modules that exist, the layout names every package of tlexport/, and the floor
list and the format-package rule on the page are the ones tests/test_layers.py enforces.

The floor table stays in tests/test_layers.py (the test is its only user at run time; the package
has no use for it) and the page is checked against it, so the page keeps its prose per floor."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_layers import FLOORS, FORMAT_FLOORS, format_floor

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "tlexport"
ARCH = ROOT / "docs" / "architecture.md"
PAGES = (ARCH, ROOT / "docs" / "adding-a-format.md")
PATH_START = ("tlexport/", "tests/", "docs/", "benchmarks/", "examples/", ".ci/")


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line) up to the next heading of the same or a
    higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n") + len(heading) + 1
    end = re.search(rf"^#{{1,{level}}} ", text[start:], re.M)
    return text[start : start + end.start()] if end else text[start:]


def defines(file: Path, name: str) -> bool:
    """`file` defines `name` at its top level (a function, class, assignment or import)."""
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def module_file(dotted: str) -> tuple[Path | None, list[str]]:
    """The file of the longest importable prefix of `dotted` (no import runs), and the rest."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        for file in (base.with_suffix(".py"), base / "__init__.py"):
            if file.is_file():
                return file, parts[n:]
    return None, parts


def missing_module(dotted: str) -> bool:
    """`tlexport.a.b[.name]` names no module, or a name its module does not define."""
    file, rest = module_file(dotted)
    return file is None or (bool(rest) and not defines(file, rest[0]))


def missing_path(token: str) -> bool:
    """A repository path (`<name>` read as a real format's name), or `file.py::name`."""
    path, _, name = token.partition("::")
    target = ROOT / path.replace("<name>", "onnx")
    return not target.exists() or bool(name and not defines(target, name))


def unknown_names(text: str) -> list[str]:
    """Every path and module named in backticks in `text` that the tree does not have."""
    bad = []
    for span in re.findall(r"`([^`\n]+)`", text):
        token = span.split("(")[0].strip()
        if token.startswith(PATH_START):
            bad += [span] if missing_path(token) else []
        elif re.fullmatch(r"tlexport(\.\w+)+", token):
            bad += [span] if missing_module(token) else []
    return bad


def layout() -> dict[Path, list[str]]:
    """The layout block: path -> the `name.py` / `name/` entries its description names."""
    block = re.search(r"```\n(.*?)```", section(ARCH.read_text(), "## Layout"), re.S).group(1)
    rows: dict[Path, list[str]] = {}
    for line in block.splitlines():
        if line and not line[0].isspace():
            path, _, line = line.partition(" ")
            current = rows.setdefault(ROOT / path, [])
        current += re.findall(r"(?<![\w./-])(\w+\.py|[a-z_]+/)(?![\w/])", line)
    return rows


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_module_a_page_names_exists(page):
    assert not unknown_names(page.read_text()), f"{page.name} names what does not exist: {unknown_names(page.read_text())}"


def test_the_check_catches_the_modules_of_an_older_tree():
    old = ("`tlexport/runtimes/onnx_rt.py` `tlexport.runtimes.onnx_rt` `tlexport.exporters.quantize` "
           "`tlexport.errors.NoSuchError` `tests/test_formats.py::test_nothing` `tlexport/formats/<name>/spec.txt`")
    assert len(unknown_names(old)) == 6, unknown_names(old)
    assert not unknown_names("`tlexport/formats/<name>/` `tlexport.errors.UsageError` `tlexport.formats.onnx.stage.stage(job)`")


def test_the_layout_names_files_that_exist_and_every_package():
    rows = layout()
    for path, entries in rows.items():
        assert path.exists(), f"docs/architecture.md's layout names {path.relative_to(ROOT)}"
        folder = path if path.is_dir() else path.parent
        gone = [e for e in entries if not (folder / e).exists()]
        assert not gone, f"{path.relative_to(ROOT)}: {', '.join(gone)} not in {folder.relative_to(ROOT)}"
    named = {p for p in rows} | {(p if p.is_dir() else p.parent) / e for p, es in rows.items() for e in es}
    top = {p for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert not sorted(top - named), f"the layout never names {sorted(p.name for p in top - named)}"


def test_the_floor_list_is_test_layers_floors():
    items = re.findall(r"^\d+\. (.+)$", section(ARCH.read_text(), "## Floors"), re.M)
    page = [tuple(re.findall(r"`(tlexport[\w.]*)`", item)) for item in items]
    assert page == [tuple(names) for names in FLOORS]


def test_the_format_package_rule_is_format_floors():
    rule = section(ARCH.read_text(), "### A format package spans three floors, by file name")
    page, other = {}, None
    for line in re.findall(r"^- (.+)$", rule, re.M):
        floor = re.findall(r"→ `([\w.]+)`", line)[-1]
        if line.startswith("any other file"):
            other = floor
        else:
            name = re.match(r"`(\w+)\.py`", line).group(1)
            page["" if name == "__init__" else name] = floor
    assert page == FORMAT_FLOORS
    assert other == format_floor("tlexport.formats.onnx.any_other_name")
