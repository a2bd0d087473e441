"""Finding and starting the system's Chromium headless, the same way everywhere (tests, the
browser runtime, screenshots): a fresh profile, no network services of its own, no GPU process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ENV = "TLEXPORT_CHROMIUM"  # the browser binary, when it is not on PATH as chromium
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install chromium"
# Headless, sandbox off (containers often forbid its namespaces), and none of the browser's own
# background traffic: it only ever talks to the page's server on 127.0.0.1.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--no-default-browser-check")
# WebGPU without a GPU process: Dawn's software adapter (SwiftShader) or a real one where present.
WEBGPU_FLAGS = ("--enable-unsafe-webgpu",)


def chromium_path() -> Path | None:
    """The browser binary: $TLEXPORT_CHROMIUM, else the first of NAMES on PATH (None: none)."""
    named = os.environ.get(ENV)
    if named:
        path = Path(named).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def missing_reason() -> str | None:
    """Why no browser can be started here (None when one can)."""
    if os.environ.get(ENV) and chromium_path() is None:
        return f"{ENV}={os.environ[ENV]} is not an executable file"
    if chromium_path() is None:
        return f"Chromium is not installed ({INSTALL}, or set {ENV} to the browser binary)"
    return None


def launch(url: str, profile: Path, log: Path, *, webgpu: bool = False) -> subprocess.Popen:
    """Start the browser on `url` with a fresh profile folder, its output going to `log`. In a
    session of its own, so that closing it ends its helper processes too."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError(missing_reason())
    args = [str(binary), *FLAGS, *(WEBGPU_FLAGS if webgpu else ()), f"--user-data-dir={profile}", url]
    from ..procs import dying_with_us

    args, guard = dying_with_us(args)
    with open(log, "ab") as out:
        # killed by the kernel if tlexport dies without closing it (SIGKILL included); its own
        # helpers (zygote, renderers) follow the browser
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=guard)


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """End the browser started by `launch` and every process of its session."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)
    else:  # the browser itself is gone; its helpers may still hold the profile
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
