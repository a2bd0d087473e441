"""The generated parts of docs/train.md: the options of `train` (and which `--resume` may change)
and of lr-find's sweep, from the config fields, and the files of a run folder, from tlexport.run.
`python -m tlexport.training.docs` rewrites them in place; the test suite fails when the committed
page differs from what this renders."""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ..run.layout import FILES
from .config import TrainConfig, flag_of
from .lrfind import Sweep

PAGE = Path(__file__).resolve().parents[2] / "docs" / "train.md"


def _default(f) -> str:
    if f.default is MISSING:
        return "required"
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    return "—" if f.default is None else f"`{f.default}`"


def _values(f) -> str:
    m = f.metadata
    if m["choices"]:
        return " \\| ".join(f"`{c}`" for c in m["choices"])
    return m["range"].words() if m["range"] is not None else ""


def options_table(cls) -> str:
    resume = cls is TrainConfig
    head = "| option | default | values |" + (" `--resume` |" if resume else "") + " meaning |"
    rows = [head, "|" + "---|" * (5 if resume else 4)]
    for f in fields(cls):
        cells = [f"`{flag_of(f)}`", _default(f), _values(f)]
        if resume:
            cells.append("may change" if f.metadata["resumable"] else "")
        cells.append(f.metadata["help"].replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def files_table() -> str:
    rows = ["| file | what it holds |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in FILES]
    return "\n".join(rows)


def blocks() -> dict[str, str]:
    return {"train-options": options_table(TrainConfig), "lr-find-options": options_table(Sweep),
            "run-files": files_table()}


def render(page: str) -> str:
    """`page` with every generated block replaced by what the code says now."""
    for name, body in blocks().items():
        begin, end = f"<!-- generated: {name} -->", f"<!-- end of generated: {name} -->"
        if begin not in page or end not in page:
            raise ValueError(f"{PAGE.name} lacks the markers of the {name!r} block")
        before, rest = page.split(begin, 1)
        page = f"{before}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"
    return page


def main() -> int:
    PAGE.write_text(render(PAGE.read_text()))
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
