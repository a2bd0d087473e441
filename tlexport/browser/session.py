"""One headless Chromium running one page, driven over the server's binary channel: start it,
send float32 tensors, get float32 results and the milliseconds each took inside the page, close."""

from __future__ import annotations

import queue
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

from ..errors import RuntimeUnavailable, TlexportError
from . import chromium
from .server import Job, PageServer

START_TIMEOUT_S = 180.0  # browser start + wasm compile + session creation, on a slow machine
CALL_TIMEOUT_S = 600.0


class PageSession:
    """A page served from `routes` at `page` (with `query`), in a browser of its own.

    The page reports `POST /__channel/ready` with a JSON object (what it loaded, which backend)
    or `/__channel/error` with one line, then serves jobs until told to stop.
    """

    def __init__(self, routes: dict, page: str, query: dict | None = None, *, webgpu: bool = False):
        self.routes, self.page, self.query, self.webgpu = dict(routes), page, dict(query or {}), webgpu
        self.info: dict = {}
        self._server: PageServer | None = None
        self._proc = None
        self._profile: Path | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> dict:
        """Serve, launch, wait for the page's ready report (returned).

        Raises:
            RuntimeUnavailable: no browser, or the page failed to load (its one line).
        """
        reason = chromium.missing_reason()
        if reason:
            raise RuntimeUnavailable(reason)
        self._server = PageServer(self.routes)
        self._profile = Path(tempfile.mkdtemp(prefix="tlexport-chromium-"))
        url = f"{self._server.url}{self.page}" + (f"?{urlencode(self.query)}" if self.query else "")
        try:
            self._proc = chromium.launch(url, self._profile / "profile", self._profile / "chromium.log",
                                         webgpu=self.webgpu)
            info = self._wait(self._server.channel.ready, timeout, "start")
        except BaseException:
            self.close()
            raise
        if not isinstance(info, dict):
            self.close()
            raise RuntimeUnavailable(f"the page could not start: {info}")
        self.info = info
        return info

    @property
    def url(self) -> str:
        return self._server.url if self._server else ""

    def run(self, array: np.ndarray, timeout: float = CALL_TIMEOUT_S) -> tuple[np.ndarray, float]:
        """One float32 tensor through the page: (float32 result, milliseconds inside the page).

        Raises:
            TlexportError: the page reported an error, sent a malformed result, or the browser died.
        """
        if self._server is None:
            raise TlexportError("the browser session is not started")
        x = np.ascontiguousarray(array, dtype="<f4")
        self._server.channel.jobs.put(Job(tuple(x.shape), x.tobytes()))
        shape, body, ms = self._wait(self._server.channel.results, timeout, "run")
        if shape is None:
            raise TlexportError(f"the page failed: {body}")
        out = np.frombuffer(body, dtype="<f4")
        if out.size != int(np.prod(shape)):
            raise TlexportError(f"the page sent {out.size} values for shape {shape}")
        return out.reshape(shape).astype(np.float32), ms

    def _wait(self, q: queue.Queue, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return q.get(timeout=0.25)
            except queue.Empty:
                pass
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeUnavailable(f"Chromium exited with code {self._proc.returncode} during {what}"
                                         f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeUnavailable(f"the page did not answer within {timeout:.0f} s during {what}")

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in (self._profile / "chromium.log").read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, TypeError):
            return ""
        return f" ({lines[-1][:200]})" if lines else ""

    def close(self) -> None:
        """Stop the page, the browser (and its helpers), the server; remove the profile."""
        if self._server is not None:
            self._server.channel.jobs.put(Job((), b"", stop=True))
        if self._proc is not None:
            chromium.stop(self._proc)
            self._proc = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __enter__(self) -> "PageSession":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
