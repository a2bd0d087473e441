"""The README stays a short front page whose fresh-machine commands are the ones CI runs, every
command of the CLI has its page under docs/ that names all its options, and the links between
them lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tlexport.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
QUICKSTART = "pip install -e . && tlexport quickstart"
# Pages that are generated from the format registry or written with it; links to them may come
# before the page itself.
PAGES_WRITTEN_ELSEWHERE = {"formats.md", "adding-a-format.md"}


def ci_command() -> str:
    """The command .ci/run executes: its last line that is not a comment, blank or shell setup."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")
                and not line.startswith(("set ", "cd ", "#!"))]
    assert commands, ".ci/run runs nothing"
    return commands[-1]


def bash_blocks(text: str) -> list[str]:
    """Every line inside the ```bash fences of a Markdown text."""
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_readme_is_short_and_holds_the_two_fresh_machine_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    commands = bash_blocks(text)
    assert QUICKSTART in commands
    test_command = ci_command()
    assert test_command in commands, f"README's test command differs from .ci/run's: {test_command}"
    assert "pytest" in test_command and "pip install" in test_command


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_a_page_naming_all_its_options(name):
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"docs/{name}.md is missing"
    text = page.read_text()
    assert f"tlexport {name}" in text
    options = {opt for p in cli.commands[name].params for opt in (*p.opts, *p.secondary_opts)
               if opt.startswith("--") and opt != "--help"}
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w-])", text))
    assert not missing, f"docs/{name}.md does not mention {', '.join(missing)}"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


def links(markdown: str) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", markdown)
            if not re.match(r"[a-z]+://", target)]


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_lead_to_pages_and_headings_that_exist(page):
    broken = []
    for target in links(page.read_text()):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            if dest.name not in PAGES_WRITTEN_ELSEWHERE:
                broken.append(target)
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(target)
    assert not broken, f"{page.name}: {', '.join(broken)}"


def test_the_sweep_command_is_the_one_readme_and_the_scheduled_run_name():
    """The per-architecture sweeps leave the default run (tests/conftest.py); README names how to
    run them, and .ci/sweep runs exactly that."""
    from conftest import SWEEP_COMMAND

    lines = [line.strip() for line in (ROOT / ".ci" / "sweep").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")][-1].endswith(f"&& {SWEEP_COMMAND}")
    assert f"`{SWEEP_COMMAND}`" in README.read_text()
    assert "sweep:" in (ROOT / "pyproject.toml").read_text()  # the marker is registered
