"""The Python side of driver.mjs: one headless Chromium (Debian's, driven by playwright-core from
this folder's node_modules) for a whole test module, plus the static file servers the pages are
served from. Used by tests/test_web.py and screenshot.py."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tlexport.browser import chromium

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.mjs"


def missing() -> str | None:
    """Why the browser tests cannot run here (one line), or None."""
    if chromium.missing_reason():
        return chromium.missing_reason()
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    for package in ("playwright-core", "onnxruntime-web"):
        if not (HERE / "node_modules" / package / "package.json").is_file():
            return f"{package} is not installed: run `npm ci --ignore-scripts` in {HERE}"
    return None


class Driver:
    """driver.mjs in a subprocess: `call(cmd, **args)` sends one command, returns its answer."""

    def __init__(self, extra_args=(), timeout_s: float = 240.0):
        self.profile = Path(tempfile.mkdtemp(prefix="tlexport-pw-"))
        flags = [f for f in chromium.FLAGS if f != "--headless"]  # playwright passes its own
        options = {"executable": str(chromium.chromium_path()), "args": [*flags, *extra_args],
                   "profile": str(self.profile / "profile"), "timeout_ms": int(timeout_s * 1000)}
        self.proc = subprocess.Popen(["node", str(DRIVER), json.dumps(options)], cwd=HERE, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.timeout_s = timeout_s
        hello = self._answer()
        if not hello.get("ready"):
            raise RuntimeError(f"the browser driver did not start: {hello}")

    def _answer(self) -> dict:
        box: list = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.timeout_s + 30)
        if not box or not box[0]:
            raise RuntimeError(f"the browser driver stopped answering: {self.proc.stderr.read() if self.proc.poll() is not None else 'timed out'}")
        return json.loads(box[0])

    def call(self, cmd: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if not answer.get("ok"):
            raise RuntimeError(f"{cmd}: {answer.get('error')}")
        return answer

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


class _Handler(SimpleHTTPRequestHandler):
    """`python -m http.server`'s handler, quiet; with `isolate`, the two headers for wasm threads."""

    isolate = False

    def end_headers(self) -> None:
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


class StaticServer:
    """A folder on 127.0.0.1 at an ephemeral port, served as `python -m http.server` serves it."""

    def __init__(self, folder: Path, isolate: bool = False):
        handler = type("Handler", (_Handler,), {"isolate": isolate})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
