"""One agent run on a target: ship a zip (the agent, job.json, inputs.npy, files/) on the agent's
stdin, read its JSON events from its stdout, and leave nothing behind.

Cleanup, on every path:
- the boot code unpacks into a fresh `tempfile.mkdtemp()` there, named with this run's token, and
  removes it in `finally`;
- it keeps reading its stdin, which the host holds open: when the host dies or lets go (Ctrl-C,
  a timeout, a killed ssh), stdin ends and the boot code removes the folder and exits;
- the host, when the run did not end with `done`, closes that stdin and waits for the client to
  exit, which it does only after the target's process has removed its folder and exited, so a
  Ctrl-C returns with the target clean whether or not `hello` had arrived yet;
- when that wait runs out (a hung target) or the agent was killed there, the host kills its own
  client process group and runs a second, short command on the target that kills the agent (only
  if its cwd is still in its folder) and removes the folders with this run's token.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

from ..errors import TlexportError
from .target import Target

PREFIX = b"@tlexport "
MAX_EVENT_BYTES = 256 << 20  # one result line holds a file's logits (base64)
CLEANUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0  # after a Ctrl-C or an error: how long the target gets to remove its folder and exit
STDERR_KEEP = 40  # lines of the target's stderr kept for the error message
EVENT_HOOKS: list = []  # callables(event dict, session) run on the host's main thread (tests use them)

# Runs first on the target, on any Python 3: refuses old ones in one line, makes the folder,
# says where it is, unpacks the zip that follows on stdin, runs the agent, and always removes it.
BOOT = r'''
import os, sys
EV = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
def out(event, **kw):
    import json
    kw["event"] = event
    EV.write("@tlexport " + json.dumps(kw) + "\n")
    EV.flush()
if sys.version_info < (3, 8):
    EV.write('@tlexport {"event": "error", "kind": "python", "message": "Python %d.%d at %s is too old: the agent needs Python 3.8+"}\n' % (sys.version_info[0], sys.version_info[1], sys.executable))
    EV.flush()
    sys.exit(3)
import io, shutil, tempfile, threading, zipfile
size = int(sys.stdin.buffer.readline() or 0)
if size <= 0:  # the host let go before sending anything: nothing was made here
    sys.exit(5)
tmp = tempfile.gettempdir()
try:
    d = tempfile.mkdtemp(prefix="tlexport-agent-%s-" % sys.argv[1])
except OSError as e:
    out("error", kind="disk", message="cannot make a folder in %s on the target: %s" % (tmp, e))
    sys.exit(3)
code = 3
try:
    os.chdir(d)
    # What the runtimes write to TMPDIR (onnxruntime leaves a .ses file there) and to the home
    # folder (onnxruntime 1.2x keeps ~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid and a
    # database) goes in our folder too.
    os.environ["TMPDIR"] = tempfile.tempdir = d
    for var, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "home/.cache"), ("XDG_CONFIG_HOME", "home/.config"),
                     ("XDG_DATA_HOME", "home/.local/share"), ("XDG_STATE_HOME", "home/.local/state")):
        os.environ[var] = os.path.join(d, sub)
    os.mkdir(os.path.join(d, "home"))
    out("hello", dir=d, pid=os.getpid())
    data = sys.stdin.buffer.read(size)
    if len(data) != size:
        sys.exit(5)
    zipfile.ZipFile(io.BytesIO(data)).extractall(d)
    del data
    def watch():
        sys.stdin.buffer.read()
        os.chdir("/")
        shutil.rmtree(d, True)
        os._exit(4)
    threading.Thread(target=watch, daemon=True).start()
    sys.dont_write_bytecode = True  # no __pycache__ appearing in the folder while watch() removes it
    sys.path.insert(0, d)
    import tlexport_agent
    code = tlexport_agent.main(d, EV)
except OSError as e:
    kind = "disk" if e.errno in (27, 28, 122) else "os"
    where = "no space left on the target in %s" % tmp if kind == "disk" else "the target failed"
    out("error", kind=kind, message="%s: %s" % (where, e))
except Exception as e:
    out("error", kind="agent", message="the agent failed: %s: %s" % (type(e).__name__, str(e).strip()[:300]))
finally:
    os.chdir("/")
    shutil.rmtree(d, True)
sys.exit(code)
'''

CLEANUP = r'''
import glob, os, shutil, signal, sys, tempfile
token, d, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
folders = set(glob.glob(os.path.join(tempfile.gettempdir(), "tlexport-agent-%s-*" % token)))
if os.path.basename(d).startswith("tlexport-agent-%s-" % token):
    folders.add(d)
for folder in folders:
    real = os.path.realpath(folder)
    for p in [pid] + [int(n) for n in os.listdir("/proc") if n.isdigit()] if os.path.isdir("/proc") else [pid]:
        try:
            cwd = os.path.realpath(os.readlink("/proc/%d/cwd" % p))
        except (OSError, ValueError):
            continue
        if p > 0 and p != os.getpid() and (cwd == real or cwd.startswith(real + os.sep)):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(folder, True)
'''


class RemoteError(TlexportError):
    """The target could not be reached or the agent could not run there (exit 1): one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C on the host while an agent ran (cleaned up before this is raised)."""


def pack(job: dict, inputs_npy: bytes, files: dict[str, Path], images: dict[str, Path | bytes] | None = None) -> bytes:
    """The zip shipped to the target: the agent and tlexport's self-contained image decoder,
    job.json, inputs.npy, files/NAME (a folder artifact's files under its name), images/NAME."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.write(Path(__file__).with_name("agent.py"), "tlexport_agent.py")
        z.write(Path(__file__).parent.parent / "data" / "images.py", "shipped_images.py")
        for name, path in (images or {}).items():  # an image file here, or bytes made here (pixels)
            z.writestr(f"images/{name}", path) if isinstance(path, bytes) else z.write(path, f"images/{name}")
        z.writestr("job.json", json.dumps(job))
        z.writestr("inputs.npy", inputs_npy)
        for name, path in files.items():
            if path.is_dir():
                for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
                    z.write(f, f"files/{name}/{f.relative_to(path).as_posix()}")
            else:
                z.write(path, f"files/{name}")
    return buf.getvalue()


class Session:
    """A running agent: the client process, its event queue, and what `hello` said."""

    def __init__(self, target: Target):
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self.folder: str | None = None
        self.pid: int | None = None
        self.readers: list[threading.Thread] = []
        self.token = secrets.token_hex(6)  # names this run's folder there, so cleanup finds it before `hello`

    def start(self, payload: bytes) -> None:
        argv = self.target.python_argv("-c", BOOT, self.token)
        try:  # its own session: the terminal's Ctrl-C reaches us only, and we end it in order
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise RemoteError(f"cannot start {argv[0]!r} for {self.target.where}: {e.strerror}") from None
        self.readers = [threading.Thread(target=fn, daemon=True) for fn in (self._read_events, self._read_stderr)]
        for t in self.readers:
            t.start()
        threading.Thread(target=self._send, args=(payload,), daemon=True).start()

    def _send(self, payload: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):  # the target went away: its events say why
            self.proc.stdin.write(b"%d\n" % len(payload))
            self.proc.stdin.write(payload)
            self.proc.stdin.flush()

    def _read_events(self) -> None:
        for line in iter(lambda: self.proc.stdout.readline(MAX_EVENT_BYTES), b""):
            if line.startswith(PREFIX):
                try:
                    event = json.loads(line[len(PREFIX):])
                except ValueError:
                    continue
                if isinstance(event, dict):
                    if event.get("event") == "hello":  # here, not on the main thread: a Ctrl-C that
                        self._hello(event)  # comes before the main thread sees it must find the folder
                    self.events.put(event)
        self.events.put(None)  # end of stream

    def _hello(self, event: dict) -> None:
        try:
            pid = int(event.get("pid", 0) or 0)
        except (TypeError, ValueError):  # a target's word is data: a bad pid is no pid
            pid = 0
        self.folder, self.pid = str(event.get("dir", "")), pid

    def _read_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", "replace").rstrip())
            del self.stderr[:-STDERR_KEEP]

    def next_event(self, deadline: float) -> dict | None:
        """The next event, None at the end of the stream; RemoteError past the deadline."""
        left = deadline - time.monotonic()
        try:
            event = self.events.get(timeout=max(0.0, left))
        except queue.Empty:
            raise RemoteError(f"the agent on {self.target.where} did not finish within "
                              f"{self.target.timeout:g} s (raise it with #timeout=S)") from None
        for hook in EVENT_HOOKS:
            hook(event, self)
        return event

    def finish(self, clean: bool) -> int | None:
        """Let go of the agent: close its stdin, so it removes its folder there and exits, and wait
        for that. A client that does not end in time is killed, and a run that did not end cleanly
        is cleaned up on the target by a second command. Returns the client's exit status."""
        if self.proc is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        killed = False
        try:
            self.proc.wait(timeout=CLEANUP_TIMEOUT if clean else STOP_TIMEOUT)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # hung there, or a second Ctrl-C here
            killed = True
        self._kill()  # its process group: an ssh control process or a wrapper's children too
        for t in self.readers:  # all of its stderr, for the message (a grandchild may hold the pipe)
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        # The readers have read all the target wrote: a folder it made has said `hello` by now
        # (the boot code writes it before anything else can happen there). The target removes its
        # folder itself when its input ends, but it may lose a race with its own last writes; the
        # sweep by token makes sure.
        if not clean and (killed or self.folder):
            self._cleanup_target()
        return self.proc.returncode

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _cleanup_target(self) -> None:
        """Remove the agent's folder there (and end the agent if it still runs in it)."""
        argv = self.target.python_argv("-c", CLEANUP, self.token, self.folder or "", str(self.pid or 0))
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=CLEANUP_TIMEOUT, start_new_session=True)
