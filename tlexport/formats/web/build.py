"""The web folder: the page (index.html, its ES modules, style.css), the ONNX model of this export,
labels.json, config.json, onnxruntime-web's files from a local npm install and a README.

Which model the page gets is decided in `page_model` alone: today the float32 NCHW file, with the
preprocessing done by the page's script from the model's embedded metadata.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

from ...exporters.job import Artifact
from ...fileio import write_text
from ..onnx.stage import stage
from . import SPEC

PAGE = Path(__file__).parent / "page"
PAGE_FILES = ("index.html", "app.js", "classify.js", "preprocess.js", "onnxmeta.js", "style.css", "icon.svg")
README = PAGE / "README.in.md"


def page_model(job, precision: str, say) -> tuple[Path, str, dict]:
    """(staged ONNX file, its name in the folder, the artifact's input spec) for the page.

    The page takes either kind of model (classify.js looks at the session's input type): a
    float32 NCHW file, preprocessed in the page's script, or an in-graph-preprocessing file
    (uint8 [H, W, 3] decoded pixels in, `logits` and `probabilities` out).
    """
    from ..onnx.graph import io_spec

    source = stage(job, precision, say)
    name = "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"
    inputs, outputs = io_spec(source.path)
    return source.path, name, {"inputs": inputs, "outputs": outputs, "int8": source.int8}


def write_folder(folder: Path, model: Path, model_name: str, meta: dict, dist: Path) -> None:
    """Everything the page needs, in `folder` (created here)."""
    import PIL

    from ... import __version__
    from ...browser.ortweb import FILES, ORT_WEB_VERSION

    folder.mkdir()
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, folder / name)
    shutil.copyfile(model, folder / model_name)
    (folder / "ort").mkdir()
    for name in FILES:
        shutil.copyfile(dist / name, folder / "ort" / name)
    write_text(folder / "labels.json", json.dumps(meta["classes"], ensure_ascii=False, indent=1) + "\n")
    config = {"model": model_name, "labels": "labels.json", "onnxruntime_web": ORT_WEB_VERSION,
              "pillow": PIL.__version__, "tlexport": __version__}
    write_text(folder / "config.json", json.dumps(config, indent=1) + "\n")
    pre = meta["preprocess"]
    readme = string.Template(README.read_text(encoding="utf-8")).substitute(
        arch=meta["arch"], classes=len(meta["classes"]), model=model_name, ort_version=ORT_WEB_VERSION,
        tlexport_version=__version__, resize=pre["resize"], crop=pre["crop"], interpolation=pre["interpolation"],
        pillow=PIL.__version__)
    write_text(folder / "README.md", readme)  # fileio: a full disk is one line naming the file


def unavailable() -> str | None:
    """Why no page can be built here (onnxruntime-web's files not found), for `--format all`."""
    from ...browser.ortweb import missing_reason

    return missing_reason()


def build(job, say) -> list[Artifact]:
    """The web folder of the precision it is handed (fp32: model.web, int8: model.int8.web)."""
    from ...browser.ortweb import ORT_WEB_VERSION, find_dist

    dist = find_dist()  # before any work: a missing npm install is named in one line
    precision = job.precision
    model, name, spec = page_model(job, precision, say)
    say(f"web page {precision}")
    folder = job.staging / SPEC.file(precision).name
    write_folder(folder, model, name, job.meta, dist)
    return [Artifact(folder.name, SPEC.name, precision, opset=job.settings["opset"], inputs=spec["inputs"],
                     outputs=spec["outputs"], int8=spec["int8"], notes=[
        f"{name} for onnxruntime-web {ORT_WEB_VERSION}; serve the folder with any static file server "
        f"(README.md), e.g. python -m http.server -d {folder.name}"])]
