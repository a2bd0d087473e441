"""onnxruntime-web's browser files: the pinned version, which of its `dist/` files a page needs,
and where to find them (never downloaded: `npm install` puts them on disk)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError

# The version the web page and the browser runtime are tested with (tests/browser/package.json
# pins the same one; a test holds the two equal).
ORT_WEB_VERSION = "1.30.0"
# `ort.min.mjs` is the wasm + WebGPU (JSEP) build; it imports the .mjs glue beside it, which
# fetches the .wasm beside that. Nothing else of dist/ is loaded.
FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
ENV = "TLEXPORT_ORT_WEB"  # a dist/ folder, or a folder holding node_modules/onnxruntime-web
PACKAGE = Path("node_modules") / "onnxruntime-web"


def install_hint(cwd: Path | None = None) -> str:
    """The one line that says how to get the files."""
    where = Path(cwd or Path.cwd()).resolve()
    return (f"onnxruntime-web {ORT_WEB_VERSION} not found: run `npm install --ignore-scripts "
            f"onnxruntime-web@{ORT_WEB_VERSION}` in {where}, or set {ENV} to the folder holding its "
            "node_modules (or to its dist folder)")


def _candidates() -> list[Path]:
    named = os.environ.get(ENV)
    if named:
        root = Path(named).expanduser()
        return [root, root / "dist", root / PACKAGE / "dist"]
    here = Path.cwd()  # then each parent folder, as Node.js resolves a package
    return [folder / PACKAGE / "dist" for folder in (here, *here.parents)]


def _version(dist: Path) -> str | None:
    try:
        return str(json.loads((dist.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_dist() -> Path:
    """The dist/ folder of onnxruntime-web ORT_WEB_VERSION, from $TLEXPORT_ORT_WEB or the
    node_modules of the working folder or one of its parents (Node.js's lookup).

    Raises:
        UsageError: not found, incomplete, or another version (one line saying what to run).
    """
    for dist in _candidates():
        if all((dist / f).is_file() for f in FILES):
            found = _version(dist)
            if found != ORT_WEB_VERSION:
                raise UsageError(f"{dist} holds onnxruntime-web {found or '(unknown version)'}, tlexport needs "
                                 f"{ORT_WEB_VERSION}: run `npm install --ignore-scripts onnxruntime-web@"
                                 f"{ORT_WEB_VERSION}` in {dist.parent.parent.parent}")
            return dist
    raise UsageError(install_hint())


def missing_reason() -> str | None:
    """Why onnxruntime-web's files cannot be used here (None when they can)."""
    try:
        find_dist()
    except UsageError as e:
        return str(e)
    return None
