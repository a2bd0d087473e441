"""Run one job through the agent on a target and return what it said, or one line saying why not."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .session import RemoteError, Session, pack
from .target import Target


@dataclass
class AgentRun:
    """What the agent reported: the device description and one result dict per file."""

    device: dict
    results: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def run_agent(target: Target, job: dict, inputs: np.ndarray, files: dict[str, Path], progress=None,
              images: dict[str, Path | bytes] | None = None) -> AgentRun:
    """Ship `files` and `inputs` with the agent to `target`, run `job` there, clean up.

    Args:
        target: a parsed `--on` value.
        job: the agent's job.json (mode, items, batch sizes...).
        inputs: float32 NCHW inputs, shipped as they are (parity isolates the runtime).
        files: name in the job -> artifact path (file or folder) on this host.
        progress: optional callable(label, done, total): while sending, as each file starts and ends.
        images: name in the job -> image file here (predict: the target decodes them itself), or
            bytes to ship under that name (parity of the in-graph model: decoded pixels as .npy).
    Raises:
        RemoteError: unreachable, refused, unknown host key, no Python 3.8+ / numpy, disk full,
            agent killed, timeout: one line.
        KeyboardInterrupt: Ctrl-C, after the target was cleaned up.
    """
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
    payload = pack(job, buf.getvalue(), files, images)
    session, done, t0 = Session(target), False, time.monotonic()
    deadline = t0 + target.timeout
    run = AgentRun(device={})
    total = len(job["items"])
    say = progress or (lambda label, done, total: None)
    try:
        say(f"{target.where}: sending {len(payload) / 1e6:.1f} MB (the agent, {total} file(s), the inputs)", 0, total)
        session.start(payload)
        error = None
        while (event := session.next_event(deadline)) is not None:
            kind = event.get("event")
            if kind == "device" and isinstance(event.get("device"), dict):
                run.device = event["device"]
            elif kind == "start":  # the agent begins a file: loading it can take minutes on a board
                say(f"{target.where}: {str(event.get('file'))[:80]} ({len(run.results) + 1}/{total})",
                    len(run.results), total)
            elif kind == "result" and isinstance(event.get("result"), dict):
                run.results.append(event["result"])
                say(f"{target.where}: {str(event['result'].get('file'))[:80]} done", len(run.results), total)
            elif kind == "error":
                error = str(event.get("message", "the agent failed"))[:500]
            elif kind == "done":
                done = True
        if not done:
            status = session.finish(clean=False)
            raise RemoteError(error or explain(target, session, status))
    finally:
        if session.proc is not None and session.proc.returncode is None:
            session.finish(clean=done)  # a clean end waits for it; anything else kills and cleans up
    run.seconds = time.monotonic() - t0
    return run


def explain(target: Target, session: Session, status: int | None) -> str:
    """One line for a run that ended without `done`, from ssh's stderr and the exit status."""
    err = "\n".join(session.stderr)
    last = next((line for line in reversed(session.stderr) if line.strip()), "")
    where = target.where
    if target.kind == "ssh" and session.folder is None:
        why = _ssh_problem(target, err)
        if why:
            return why
    if session.folder is None and (status == 127 or re.search(r"not found|No such file", err)):
        python = target.python if target.kind == "ssh" else target.prefix[-1]
        return (f"no Python at {python!r} on {where}: install Python 3.8+ there (e.g. apt install python3) "
                + ("or name it with #python=PATH" if target.kind == "ssh" else "or fix the cmd: prefix"))
    if session.folder is not None:
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        return (f"the agent on {where} stopped mid-run ({how}{'; ' + last if last else ''}); "
                "its folder there was removed")
    return f"the agent could not start on {where} (exit status {status}{': ' + last if last else ''})"


def _ssh_problem(target: Target, err: str) -> str | None:
    host, port = target.host.strip("[]"), target.port or 22
    dest = f"[{host}]:{port}" if target.port else host
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
        return (f"the host key of {dest} differs from the one in known_hosts (a reinstalled board, or someone "
                f"in between): check it, then remove the old one with ssh-keygen -R '{dest}'")
    if re.search(r"No \S+ host key is known|Host key verification failed", err):
        return (f"the host key of {dest} is not in known_hosts and ssh never accepts one unseen: check its "
                f"fingerprint, then add it with: ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts")
    if "Permission denied" in err:
        return (f"{target.where} refused the key (ssh key auth, no password prompt): install your public key "
                f"there with ssh-copy-id -p {port} {target.user + '@' if target.user else ''}{host}, "
                "or name the key in ~/.ssh/config")
    if "Connection refused" in err:
        return f"cannot reach {target.where}: connection refused (is sshd running on port {port}?)"
    if re.search(r"timed out|No route to host|Network is unreachable", err):
        return f"cannot reach {target.where}: {_last(err)}"
    if "Could not resolve hostname" in err:
        return f"cannot resolve {host} (check the name in --on)"
    return None


def _last(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "no answer"
