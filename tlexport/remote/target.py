"""Where `--on TARGET` runs the agent: the target string, parsed once, and the command lines that
start the agent and clean up after it.

    ssh://[user@]host[:port][#options]   the system OpenSSH client, key auth, batch mode
    cmd:PREFIX[#options]                 PREFIX starts the target's Python locally: another venv
                                         (`cmd:/opt/venv/bin/python`), an emulated ARM root
                                         (`cmd:chroot /srv/arm64 /opt/rt/bin/python`), a container
                                         (`cmd:docker exec -i box python3`)

Options after `#`, comma-separated: `python=PATH` (ssh: the interpreter there, default python3),
`timeout=S` (the whole remote command, default 900 s), `connect-timeout=S` (ssh, default 10 s),
`emulated` (declare an emulated target: its timings are not speeds).

ssh never asks anything: BatchMode=yes (no password or passphrase prompt), StrictHostKeyChecking=yes
(an unknown host key is refused, never accepted on first use: known_hosts is the user's to
extend), ServerAliveInterval/CountMax (a dead link ends the command in ~15 s). The ssh config
is the user's own (~/.ssh/config), or the file named by TLEXPORT_SSH_CONFIG.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from ..errors import UsageError

DEFAULT_TIMEOUT = 900.0
DEFAULT_CONNECT_TIMEOUT = 10.0
SSH_CONFIG_ENV = "TLEXPORT_SSH_CONFIG"
SYNTAX = "ssh://[user@]host[:port][#options] or cmd:PREFIX[#options] (docs/devices.md)"
_SSH = re.compile(r"^ssh://(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
                  r"(?::(?P<port>\d{1,5}))?/?$")


@dataclass(frozen=True)
class Target:
    """A parsed `--on` value.

    Args:
        text: what the user typed (recorded in the manifest).
        kind: "ssh" or "cmd".
        host, user, port: the ssh destination (ssh only).
        prefix: the argv that starts the target's Python (cmd only).
        python: the interpreter on an ssh target.
        timeout, connect_timeout: seconds.
        emulated: declared emulated (the agent also detects qemu-user by itself).
    """

    text: str
    kind: str
    host: str = ""
    user: str | None = None
    port: int | None = None
    prefix: tuple[str, ...] = ()
    python: str = "python3"
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    emulated: bool = False
    options: dict = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        """The target in a message: user@host:port, or the command prefix."""
        if self.kind == "ssh":
            return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"
        return shlex.join(self.prefix)

    def ssh_base(self) -> list[str]:
        """`ssh` with tlexport's non-interactive options, up to and including the destination."""
        argv = ["ssh"]
        config = os.environ.get(SSH_CONFIG_ENV)
        if config:
            argv += ["-F", config]
        argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                 "-o", "LogLevel=ERROR", "-T"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        return argv + ["--", self.host.strip("[]")]

    def python_argv(self, *args: str) -> list[str]:
        """The argv that runs the target's Python with `args` (ssh: one remote shell command)."""
        if self.kind == "ssh":  # ~/ is the remote user's home, as a shell would read it unquoted
            py = self.python
            python = '"$HOME"/' + shlex.quote(py[2:]) if py.startswith("~/") else shlex.quote(py)
            return self.ssh_base() + [" ".join([python, shlex.join(args)])]
        return [*self.prefix, *args]


def parse(text: str) -> Target:
    """A `--on` value -> Target.

    Raises:
        UsageError: not one of the two forms, or a bad option (one line naming the syntax).
    """
    text = str(text).strip()
    body, _, frag = text.partition("#")
    options = _options(frag, text)
    common = {"timeout": _seconds(options, "timeout", DEFAULT_TIMEOUT, text),
              "emulated": options.pop("emulated", None) is not None}
    if body.startswith("ssh://"):
        m = _SSH.match(body)
        if not m:
            raise UsageError(f"--on {text!r}: expected {SYNTAX}")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--on {text!r}: port {port} is not in 1..65535")
        ct = _seconds(options, "connect-timeout", DEFAULT_CONNECT_TIMEOUT, text)
        python = options.pop("python", None) or "python3"
        _no_more(options, text)
        return Target(text, "ssh", host=m["host"], user=m["user"], port=port, python=python,
                      connect_timeout=ct, **common)
    if body.startswith("cmd:"):
        try:
            prefix = tuple(shlex.split(body[4:]))
        except ValueError as e:
            raise UsageError(f"--on {text!r}: {e}") from None
        if not prefix:
            raise UsageError(f"--on {text!r}: cmd: needs the command that starts the target's Python")
        _no_more(options, text)
        return Target(text, "cmd", prefix=prefix, **common)
    raise UsageError(f"--on {text!r}: expected {SYNTAX}")


def _options(frag: str, text: str) -> dict:
    out = {}
    for item in filter(None, (p.strip() for p in frag.split(","))):
        key, eq, value = item.partition("=")
        out[key.strip()] = value.strip() if eq else ""
    return out


def _seconds(options: dict, key: str, default: float, text: str) -> float:
    if key not in options:
        return default
    value = options.pop(key)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        raise UsageError(f"--on {text!r}: {key} must be a number of seconds > 0, not {value!r}")
    return seconds


def _no_more(options: dict, text: str) -> None:
    if options:
        raise UsageError(f"--on {text!r}: unknown option {next(iter(options))!r} "
                         "(known: python=PATH for ssh, timeout=S, connect-timeout=S, emulated)")
