"""A static file server on 127.0.0.1 with the headers a page needs for wasm threads, plus the
binary channel the browser runtime drives its page with.

Files are served from a route table (URL path -> file), never from a folder walk, so nothing but
the named files is reachable. The channel: the page long-polls `GET /__channel/job` for a float32
tensor (shape in `X-Shape`), runs it, and `POST`s the float32 result to `/__channel/result` with
its shape and the milliseconds it took inside the page (`X-Shape`, `X-Ms`); `/__channel/ready`
and `/__channel/error` carry one JSON object or one line of text.
"""

from __future__ import annotations

import json
import mimetypes
import queue
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Cross-origin isolation (SharedArrayBuffer, hence wasm threads) needs both.
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream", ".json": "application/json", ".html": "text/html; charset=utf-8",
         ".css": "text/css", ".md": "text/markdown; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
POLL_S = 10.0  # a job request waits this long before answering 204 (the page asks again)
MAX_BODY = 1 << 30  # a result larger than this is not a classifier's logits


@dataclass
class Job:
    shape: tuple[int, ...]
    data: bytes
    stop: bool = False


@dataclass
class Channel:
    """What the page and the Python side exchange; every queue is filled by one side only."""

    jobs: queue.Queue = field(default_factory=queue.Queue)
    results: queue.Queue = field(default_factory=queue.Queue)  # (shape, bytes, ms) or (None, message, None)
    ready: queue.Queue = field(default_factory=queue.Queue)  # the page's JSON report, or an error line


def _shape(text: str | None) -> tuple[int, ...]:
    dims = tuple(int(x) for x in (text or "").split(",") if x.strip())
    if not dims or any(d < 0 for d in dims):
        raise ValueError(f"bad shape {text!r}")
    return dims


class Handler(BaseHTTPRequestHandler):
    server_version = "tlexport"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the browser's requests are not the user's business
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8", headers=None) -> None:
        self.send_response(status)
        for k, v in {**ISOLATION, "Content-Type": ctype, "Content-Length": str(len(body)),
                     "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/__channel/job":
            return self._job()
        file = self.server.routes.get(path)
        if file is None:
            return self._send(HTTPStatus.NOT_FOUND, b"not found")
        ctype = TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, file.read_bytes(), ctype)

    def _job(self) -> None:
        try:
            job = self.server.channel.jobs.get(timeout=POLL_S)
        except queue.Empty:
            return self._send(HTTPStatus.NO_CONTENT)
        if job.stop:
            return self._send(HTTPStatus.OK, b"", headers={"X-Stop": "1"})
        self._send(HTTPStatus.OK, job.data, "application/octet-stream",
                   {"X-Shape": ",".join(map(str, job.shape))})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large")
        body = self.rfile.read(size)
        channel = self.server.channel
        if path == "/__channel/result":
            try:
                channel.results.put((_shape(self.headers.get("X-Shape")), body, float(self.headers.get("X-Ms"))))
            except (TypeError, ValueError) as e:
                channel.results.put((None, f"the page sent a malformed result ({e})", None))
        elif path == "/__channel/ready":
            try:
                channel.ready.put(json.loads(body.decode("utf-8")))
            except ValueError:
                channel.ready.put("the page sent a malformed ready message")
        elif path == "/__channel/error":
            message = body.decode("utf-8", "replace").strip().splitlines()
            line = (message[0] if message else "unknown error")[:300]
            channel.ready.put(line)
            channel.results.put((None, line, None))
        else:
            return self._send(HTTPStatus.NOT_FOUND, b"not found")
        self._send(HTTPStatus.NO_CONTENT)


class PageServer(ThreadingHTTPServer):
    """Serves `routes` ({"/index.html": Path}) on 127.0.0.1 at an ephemeral port, in a thread."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Path]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = {k: Path(v) for k, v in routes.items()}
        self.channel = Channel()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        """A browser closed mid-request (its long poll, when it is stopped): nothing to report."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def folder_routes(folder: Path) -> dict[str, Path]:
    """Every file under `folder` by its URL path (what a static server of the folder serves)."""
    folder = Path(folder)
    return {"/" + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
