"""`browser`: a model run inside headless Chromium by onnxruntime-web, through the page's own
classify.js: an `.onnx` file (with onnxruntime-web's files from a local npm install) or a web
folder (with the files it ships). Loaded once per runtime (one browser each), float32 NCHW in,
logits out over a binary channel; each call is also timed inside the page with
`performance.now()`, which `tlexport bench` reports (`reported_ms`, `timer`).

wasm by default; `TLEXPORT_BROWSER_BACKEND=webgpu` runs on the browser's WebGPU adapter instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...browser import chromium, ortweb
from ...browser.session import PageSession
from ...errors import UsageError
from ...runtimes.base import Runtime

PAGE = Path(__file__).parent / "page"
RUNNER = Path(chromium.__file__).parent / "static"
SCRIPTS = ("classify.js", "preprocess.js", "onnxmeta.js")
BACKEND_ENV = "TLEXPORT_BROWSER_BACKEND"
BACKENDS = ("wasm", "webgpu")


def backend() -> str:
    value = os.environ.get(BACKEND_ENV, "wasm").strip().lower() or "wasm"
    if value not in BACKENDS:
        raise UsageError(f"{BACKEND_ENV}={value}: choose {' or '.join(BACKENDS)}")
    return value


def routes_for(artifact: Path) -> tuple[dict, str]:
    """(URL path -> file, the model's URL path) serving `artifact` to the runner page."""
    from ...browser.server import folder_routes
    from .metadata import model_file

    runner = {f"/__runner/{name}": RUNNER / name for name in ("runner.html", "runner.js")}
    if artifact.is_dir():  # a web folder: its own page scripts and onnxruntime-web files
        model = model_file(artifact)
        return {**folder_routes(artifact), **runner}, model.relative_to(artifact).as_posix()
    dist = ortweb.find_dist()
    routes = {f"/{name}": PAGE / name for name in SCRIPTS}
    routes.update({f"/ort/{name}": dist / name for name in ortweb.FILES})
    return {**routes, **runner, "/model.onnx": artifact}, "model.onnx"


class BrowserRuntime(Runtime):
    """onnxruntime-web in headless Chromium (see the module's docstring)."""

    name = "browser"
    timed_at_export = False  # a headless Chromium per load: `tlexport bench --runtimes browser` times it

    @classmethod
    def unavailable_reason(cls, device, precision):
        if device != "cpu":
            return "the browser runtime runs on the CPU (wasm) or the browser's WebGPU, not on CUDA"
        return chromium.missing_reason() or ortweb.missing_reason()

    def _load(self):
        routes, model = routes_for(self.artifact)
        query = {"model": model, "backend": backend(), **({"threads": int(self.threads)} if self.threads else {})}
        self.page = PageSession(routes, "/__runner/runner.html", query, webgpu=query["backend"] == "webgpu")
        info = self.page.start()
        if info.get("input") != "float32":
            self._release()
            raise UsageError(f"{self.artifact} takes {info.get('input')} input (decoded images); the browser "
                             "runtime feeds float32 NCHW batches")
        self.page_info = info
        self.timer = (f"performance.now() around session.run in the page (onnxruntime-web {info.get('ort')}, "
                      f"{info.get('description')})")
        self.reported_ms: float | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.reported_ms = 0.0  # summed over the chunks of a fixed-batch graph
        return super().run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out, ms = self.page.run(batch)
        self.reported_ms = (self.reported_ms or 0.0) + ms
        return out

    def _release(self) -> None:
        page = self.__dict__.pop("page", None)
        if page is not None:
            page.close()


RUNTIMES = (BrowserRuntime,)
