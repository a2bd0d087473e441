"""`--on TARGET`: parity, bench and predict on another machine through the torch-free agent.

A real OpenSSH server (Debian's openssh-server, tests/system-deps.sh) is started on 127.0.0.1 on a
free port with its own config, host key and client key (nothing system-wide), and its "remote"
Python is a venv that exposes only numpy, Pillow and onnxruntime: torch cannot be imported there
(checked). Every bad input is one line, its exit code, and no folder left on the target: each
wrapper interpreter points TMPDIR at a folder of the test, which must be empty afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlexport.cli import cli
from tlexport.remote import session as remote_session
from tlexport.remote.target import SSH_CONFIG_ENV, parse

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
EXPOSED = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tlexport-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


# ---- the "remote" Python: a venv without torch ---------------------------------------------------
@pytest.fixture(scope="session")
def torch_free_python(tmp_path_factory) -> Path:
    """A venv whose site-packages expose only numpy, Pillow and onnxruntime (links to this
    interpreter's copies: no download, about a second)."""
    import numpy

    site = Path(numpy.__file__).parent.parent
    root = tmp_path_factory.mktemp("remote-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    exposed = root / "exposed"
    exposed.mkdir()
    for name in EXPOSED + tuple(p.name for p in site.glob("*.dist-info")
                                if p.name.split("-")[0].lower() in ("numpy", "pillow", "onnxruntime")):
        if (site / name).exists():
            (exposed / name).symlink_to(site / name)
    venv_site = next((root / "venv" / "lib").glob("python3*/site-packages"))
    (venv_site / "exposed.pth").write_text(str(exposed) + "\n")
    python = root / "venv" / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import numpy, PIL, onnxruntime\ntry:\n import torch\n"
                            "except ImportError:\n print('no torch')"], capture_output=True, text=True)
    assert probe.stdout.strip() == "no torch", probe.stderr  # the target really is torch-free
    return python


def _wrapper(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def remote_tmp(tmp_path) -> Path:
    """The target's TMPDIR for one test: must be empty when the command returns."""
    d = tmp_path / "remote-tmp"
    d.mkdir()
    return d


@pytest.fixture
def python_there(torch_free_python, remote_tmp, tmp_path) -> str:
    """The target's Python, whose TMPDIR and home folder are both `remote_tmp`: a runtime that
    writes to ~/.cache (onnxruntime does) leaves something there unless the agent redirects it."""
    return _wrapper(tmp_path, "py", f"unset XDG_CACHE_HOME XDG_CONFIG_HOME XDG_DATA_HOME XDG_STATE_HOME; "
                                    f'HOME={remote_tmp} TMPDIR={remote_tmp} exec {torch_free_python} "$@"')


# ---- sshd on 127.0.0.1 ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd on a free port of 127.0.0.1 with its own config and keys; always torn down."""
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server / openssh-client not installed (tests/system-deps.sh installs them)")
    d = tmp_path_factory.mktemp("sshd")
    host_key, client_key, other_key = (_keygen(d / n) for n in ("host_key", "client_key", "other_key"))
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port, user = _free_port(), _user()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nMaxStartups 50\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir, as its service makes it
    from tlexport.procs import dying_with_us

    # the daemon goes with pytest even when pytest dies before this fixture's teardown (a crashed
    # run once left it listening); without a fork of pytest, which may have loaded JAX by now
    argv, guard = dying_with_us([SSHD, "-D", "-e", "-f", str(d / "sshd_config")])
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                preexec_fn=guard)
    try:
        _wait_listening(proc, port, d / "sshd.log")
        host_pub = host_key.with_suffix(".pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        (d / "empty_known_hosts").write_text("")
        yield {"dir": d, "port": port, "user": user, "client_key": client_key, "other_key": other_key}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _wait_listening(proc, port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start: {log.read_text(errors='replace').strip()[-300:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a port for readiness, not synchronising with a signal
    pytest.fail("sshd did not listen within 20 s")


def ssh_config(sshd, tmp_path, key="client_key", known="known_hosts") -> Path:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host *\n  IdentityFile {sshd[key]}\n  IdentitiesOnly yes\n"
                   f"  UserKnownHostsFile {sshd['dir'] / known}\n  GlobalKnownHostsFile /dev/null\n")
    return cfg


@pytest.fixture
def ssh_ok(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv(SSH_CONFIG_ENV, str(ssh_config(sshd, tmp_path)))
    return sshd


def on_ssh(sshd, python: str, port: int | None = None, options: str = "") -> str:
    return f"ssh://{sshd['user']}@127.0.0.1:{port or sshd['port']}#python={python}{options}"


# ---- an export ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def remote_export(fake_run, tmp_path_factory) -> Path:
    from tlexport.exporters.pipeline import export

    out = tmp_path_factory.mktemp("remote") / "export"
    export(fake_run, formats=("onnx",), precisions=("fp32",), out=out, verify=False, bake_preprocess=True)
    return out


@pytest.fixture
def export_copy(remote_export, tmp_path) -> Path:
    """The export, copied: a test may record devices in its manifest."""
    dst = tmp_path / "export"
    shutil.copytree(remote_export, dst)
    return dst


def invoke(args):
    return CliRunner().invoke(cli, args)


def one_line_error(r, code: int, *words) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output, r.output
    lines = [line for line in r.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.output
    for w in words:
        assert w in lines[0], r.output
    return lines[0]


def bench_args(export: Path, on: str, *more) -> list[str]:
    return ["bench", str(export), "--on", on, "--iters", "2", "--warmup", "1", "--quiet", *more]


# ---- the happy paths -----------------------------------------------------------------------------
def test_parity_and_bench_on_ssh_record_the_device(ssh_ok, python_there, torch_free_python, export_copy, remote_tmp,
                                                   tmp_path):
    on = on_ssh(ssh_ok, python_there)
    report = tmp_path / "parity.json"
    r = invoke(["parity", str(export_copy), "--on", on, "--max-images", "4", "--json", str(report),
                "--markdown", str(tmp_path / "parity.md")])
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    md = (tmp_path / "parity.md").read_text()  # a saved report says on which device it ran
    assert f"\n- on {ssh_ok['user']}@127.0.0.1:{ssh_ok['port']}: " in md and "| model.uint8.onnx |" in md, md
    row = next(x for x in data["results"] if x["runtime"] == "onnxruntime")
    assert row["passed"] is True and row["batch_independent"] is True and row["max_abs"] < 1e-4
    # the in-graph model ran on the very pixels decoded here, compared with this machine's run
    baked = next(x for x in data["results"] if Path(x["artifact"]).name == "model.uint8.onnx")
    assert baked["passed"] is True and baked["max_abs"] < 1e-4 and baked["top1_agreement"] == 100.0
    assert any("model.uint8.onnx: 4 val images decoded here" in n for n in data["notes"]), data["notes"]  # --max-images
    target = data["environment"]["target"]
    assert target["on"] == on and target["python_path"] == str(torch_free_python)
    assert "torch" not in target["versions"] and target["versions"]["onnxruntime"]
    r = invoke(bench_args(export_copy, on, "--json", str(tmp_path / "bench.json")))
    assert r.exit_code == 0, r.output
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["results"][0]["file"] == "model.onnx" and bench["results"][0]["p50_ms"] > 0
    devices = json.loads((export_copy / "manifest.json").read_text())["devices"]
    (key, entry), = devices.items()
    assert entry["target"] == on and entry["device"]["machine"] == os.uname().machine.lower()
    if Path("/etc/machine-id").is_file() and Path("/etc/machine-id").read_text().strip():
        digest = entry["device"]["machine_id"]  # the id's digest, not the id
        assert len(digest) == 8 and digest not in Path("/etc/machine-id").read_text()
    assert entry["files"]["model.onnx"]["verified"] is True and entry["files"]["model.onnx"]["p50_ms"] > 0
    assert entry["fastest"] == "model.onnx" and entry["emulated"] is False
    assert entry["files"]["model.uint8.onnx"]["verified"] is True
    assert list(remote_tmp.iterdir()) == []


def test_predict_on_runs_the_devices_fastest_file(python_there, export_copy, tiny_data, remote_tmp):
    """A device whose record names model.onnx as fastest; predict ships the images there."""
    on = f"cmd:{python_there}"
    r = invoke(bench_args(export_copy, on))
    assert r.exit_code == 0, r.output
    r = invoke(["parity", str(export_copy), "--on", on, "--max-images", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    val = tiny_data / "val"
    r = invoke(["predict", str(export_copy), str(val), "--on", on, "--json", "--top-k", "2"])
    assert r.exit_code == 0, r.output
    assert "the fastest verified file on" in r.output
    rows = json.loads(r.output[r.output.index("["):])
    assert len(rows) == len(list(val.rglob("*.png"))) and all(len(x["top"]) == 2 for x in rows)
    local = invoke(["predict", str(export_copy / "model.onnx"), str(val), "--json", "--top-k", "2"])
    assert [x["top"][0]["label"] for x in json.loads(local.output)] == [x["top"][0]["label"] for x in rows]
    assert list(remote_tmp.iterdir()) == []


def test_emulated_declared_timings_are_not_speeds(python_there, export_copy, tmp_path):
    r = invoke(bench_args(export_copy, f"cmd:{python_there}#emulated", "--json", str(tmp_path / "b.json")))
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["emulated"] is True and data["timings"] == "emulated — not a speed"
    entry = next(iter(json.loads((export_copy / "manifest.json").read_text())["devices"].values()))
    assert entry["emulated"] is True and entry["fastest"] is None


# ---- bad input: one line, exit code, nothing left ------------------------------------------------
def test_unreachable_host(ssh_ok, python_there, export_copy):
    r = invoke(bench_args(export_copy, on_ssh(ssh_ok, python_there, port=_free_port())))
    one_line_error(r, 1, "cannot reach", "connection refused")


def test_refused_key(sshd, python_there, export_copy, tmp_path, monkeypatch):
    monkeypatch.setenv(SSH_CONFIG_ENV, str(ssh_config(sshd, tmp_path, key="other_key")))
    one_line_error(invoke(bench_args(export_copy, on_ssh(sshd, python_there))), 1, "refused the key", "ssh-copy-id")


def test_unknown_host_key_is_never_accepted(sshd, python_there, export_copy, tmp_path, monkeypatch):
    monkeypatch.setenv(SSH_CONFIG_ENV, str(ssh_config(sshd, tmp_path, known="empty_known_hosts")))
    line = one_line_error(invoke(bench_args(export_copy, on_ssh(sshd, python_there))), 1, "not in known_hosts",
                          f"ssh-keyscan -p {sshd['port']} 127.0.0.1")
    assert (sshd["dir"] / "empty_known_hosts").read_text() == "", line  # nothing was added


def test_no_python_there(ssh_ok, export_copy, tmp_path):
    one_line_error(invoke(bench_args(export_copy, on_ssh(ssh_ok, str(tmp_path / "no-python3")))), 1,
                   "no Python at", "3.8+")


def _pyenv(version: str) -> Path | None:
    """A real interpreter of that version when this machine has one (pyenv), else None."""
    found = sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob(f"{version}.*/bin/python"))
    return found[0] if found else None


def test_python_too_old(ssh_ok, torch_free_python, export_copy, tmp_path, remote_tmp):
    """A real Python 3.7 when there is one; else the real interpreter told it is 3.7 before the
    boot code runs."""
    old = _pyenv("3.7")
    body = (f'TMPDIR={remote_tmp} exec {old} "$@"' if old else
            f"TMPDIR={remote_tmp} exec {torch_free_python} -c 'import sys; sys.version_info = (3, 7, 3, \"final\", 0); "
            "exec(compile(sys.argv[1], \"<boot>\", \"exec\"))' \"$2\"")
    one_line_error(invoke(bench_args(export_copy, on_ssh(ssh_ok, _wrapper(tmp_path, "py37", body)))), 1,
                   "Python 3.7 at", "too old", "3.8+")
    assert list(remote_tmp.iterdir()) == []


def test_no_numpy_there(ssh_ok, export_copy, tmp_path, remote_tmp):
    """A Python without numpy: a real 3.8 when there is one (the boot code and the agent then
    also prove they run on the oldest Python they promise), else a bare venv."""
    py38 = _pyenv("3.8")
    if py38 is None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    python = py38 or tmp_path / "bare" / "bin" / "python"
    py = _wrapper(tmp_path, "bare-py", f'TMPDIR={remote_tmp} exec {python} "$@"')
    one_line_error(invoke(bench_args(export_copy, on_ssh(ssh_ok, py))), 1, "numpy is not installed",
                   f"{python} -m pip install numpy")
    assert list(remote_tmp.iterdir()) == []


def test_runtime_missing_there_names_the_pip_line(python_there, export_copy, tmp_path):
    """A .tflite beside the ONNX: the target has no LiteRT, so that file is a skip naming its install."""
    shutil.copy(export_copy / "model.onnx", export_copy / "extra.tflite")
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["artifacts"].append({"file": "extra.tflite", "format": "tflite", "precision": "fp32"})
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    r = invoke(["bench", str(export_copy), "--on", f"cmd:{python_there}", "--iters", "2", "--warmup", "1"])
    assert r.exit_code == 0, r.output
    assert "skipped extra.tflite: ai-edge-litert" in r.output and "-m pip install ai-edge-litert" in r.output


def test_full_disk_on_the_target(ssh_ok, torch_free_python, export_copy, tmp_path):
    tiny = tmp_path / "tiny-tmpfs"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(tiny)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        py = _wrapper(tmp_path, "full-py", f'TMPDIR={tiny} exec {torch_free_python} "$@"')
        one_line_error(invoke(bench_args(export_copy, on_ssh(ssh_ok, py))), 1, "no space left on the target")
        assert list(tiny.iterdir()) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def _on_ready(action):
    """A hook that runs `action(session)` when the agent says it is ready (the files unpacked)."""
    def hook(event, session):
        if event and event.get("event") == "ready":
            action(session)
    return hook


def test_target_killed_mid_run(ssh_ok, python_there, export_copy, remote_tmp, monkeypatch):
    monkeypatch.setattr(remote_session, "EVENT_HOOKS", [_on_ready(lambda s: os.kill(s.pid, signal.SIGKILL))])
    one_line_error(invoke(bench_args(export_copy, on_ssh(ssh_ok, python_there))), 1, "stopped mid-run",
                   "folder there was removed")
    assert list(remote_tmp.iterdir()) == []


@pytest.mark.parametrize("when", ["running", "slow target"])
def test_ctrl_c_on_the_host(ssh_ok, torch_free_python, export_copy, remote_tmp, tmp_path, when):
    """SIGINT to the command (a real process, as a terminal sends it) once the agent has made its
    folder on the target: exit 130, the agent and its folder gone when the command returns, the
    manifest untouched. "slow target": what the host sends reaches the target seconds late, and
    what it says reaches the host seconds late, so the host does not yet know the folder's name
    when the signal comes and the target sees the end of its input only later: the folder must be
    gone when the command returns, not removed later by the target on its own. The signal goes to a child, never to the test
    process: a SIGINT to pytest itself, whatever earlier tests left running in it, is not a test
    of the command."""
    import subprocess
    import sys
    import time

    late_in, late_out = ("{ cat; sleep 3; } | ", " | { sleep 4; cat; }") if when == "slow target" else ("", "")
    python_there = _wrapper(tmp_path, "py", f'{late_in}TMPDIR={remote_tmp} {torch_free_python} "$@"{late_out}')
    before = (export_copy / "manifest.json").read_bytes()
    # --duration 600: the bench is still running whenever the signal comes (it cannot finish first)
    args = ["bench", str(export_copy), "--on", on_ssh(ssh_ok, python_there), "--duration", "600", "--warmup", "1",
            "--quiet"]
    child = subprocess.Popen([sys.executable, "-m", "tlexport", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(remote_tmp.iterdir()):  # the agent's folder on the target: it is running there
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "the agent never started on the target"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out = child.communicate(timeout=120)[0]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "Traceback" not in out, out
    assert list(remote_tmp.iterdir()) == []
    assert (export_copy / "manifest.json").read_bytes() == before
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
def test_command_timeout(export_copy, tmp_path):
    """A target that takes the payload and never answers: the command timeout ends it."""
    hang = _wrapper(tmp_path, "hang", "exec 3>&1\ncat >/dev/null")  # fd 3 keeps its stdout open
    one_line_error(invoke(bench_args(export_copy, f"cmd:{hang}#timeout=1")), 1, "did not finish within 1 s")


def test_bad_targets_are_usage_errors(export_copy):
    for bad in ("pi@board", "ssh://", "ssh://host:99999", "cmd:", "cmd:python3#speed=1", "ssh://h#timeout=-1"):
        one_line_error(invoke(bench_args(export_copy, bad)), 2, "--on")


def test_target_parsing():
    t = parse("ssh://pi@board.local:2222#python=/opt/rt/bin/python,timeout=60,emulated")
    assert (t.user, t.host, t.port, t.python, t.timeout, t.emulated) == ("pi", "board.local", 2222,
                                                                          "/opt/rt/bin/python", 60.0, True)
    argv = t.python_argv("-c", "print(1)")
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv and argv[-1].startswith("/opt/rt/bin/python -c")
    assert parse("cmd:chroot /srv/arm64 /opt/rt/bin/python").prefix == ("chroot", "/srv/arm64", "/opt/rt/bin/python")
    # ~/ means the remote user's home (a quoted '~/tlx/bin/python' would be looked up literally)
    home = parse("ssh://pi@board#python=~/my venv/bin/python").python_argv("-c", "print(1)")[-1]
    assert home.startswith('"$HOME"/\'my venv/bin/python\' -c ')
    ran = subprocess.run(["sh", "-c", "printf '%s\\n' " + home.split(" -c ")[0]], capture_output=True, text=True,
                         env={"HOME": "/home/pi"})  # what the remote shell makes of it
    assert ran.stdout == "/home/pi/my venv/bin/python\n", ran


def test_a_system_python_that_refuses_pip_gets_a_venv_line(tmp_path, monkeypatch):
    """Debian 12 / Raspberry Pi OS mark their Python EXTERNALLY-MANAGED (PEP 668): `pip install`
    fails there, so the line says how to make a venv and name it."""
    import sysconfig

    from tlexport.remote import agent

    (tmp_path / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n")
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)
    line = agent.install_line("ai-edge-litert")
    assert line.startswith("python3 -m venv ~/tlx && ~/tlx/bin/pip install numpy pillow ai-edge-litert, then add "
                           "#python=~/tlx/bin/python to --on"), line
    assert "and your files' runtimes" in agent.install_line("numpy")
    (tmp_path / "EXTERNALLY-MANAGED").unlink()
    assert agent.install_line("numpy") == f"{sys.executable} -m pip install numpy"


def test_amd64_ort_refused_on_arm(tmp_path, monkeypatch):
    """The agent refuses an .ort with the x86 NCHWc layout on a non-x86 machine, naming why."""
    from tlexport.remote import agent

    f = tmp_path / "model.ort"
    f.write_bytes(b"\x00ORT\x00com.microsoft.nchwc:Conv:1\x00ReorderOutput")
    monkeypatch.setattr(agent.platform, "machine", lambda: "aarch64")
    with pytest.raises(agent.Unavailable, match="x86 NCHWc layout.*--ort-target portable"):
        agent._refuse_foreign_ort(str(f))
    f.write_bytes(b"\x00ORT\x00ai.onnx\x00com.microsoft.nchwc\x00Conv")  # a portable file lists the domain only
    agent._refuse_foreign_ort(str(f))


# ---- ARM, emulated (opt-in) ------------------------------------------------------------------------
ARM64_ROOT = Path(os.environ.get("TLEXPORT_ARM64_ROOT", "/work/arm64root"))


@pytest.mark.arm64
@pytest.mark.skipif(not (ARM64_ROOT / "opt/rt/bin/python").exists() or os.geteuid() != 0,
                    reason="no arm64 root with /opt/rt (benchmarks/arm64_root.sh; TLEXPORT_ARM64_ROOT) or not root")
def test_parity_in_the_arm64_root(export_copy, tmp_path):
    script = Path(__file__).parent.parent / "benchmarks" / "arm64_python.sh"
    on = f"cmd:sh {script} {ARM64_ROOT}#timeout=1800"
    before = set((ARM64_ROOT / "tmp").glob("tlexport-agent-*"))  # another run's may be there
    r = invoke(["parity", str(export_copy), "--on", on, "--max-images", "4", "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    target = json.loads((tmp_path / "p.json").read_text())["environment"]["target"]
    assert target["machine"] == "aarch64" and target["emulated"] is True
    assert set((ARM64_ROOT / "tmp").glob("tlexport-agent-*")) <= before


def test_a_locked_export_keeps_its_manifest(python_there, export_copy):
    """An export writing the folder holds its lock: the result is shown, the record is refused in
    one note, and manifest.json is not touched."""
    from tlexport.fileio import folder_lock

    before = (export_copy / "manifest.json").read_bytes()
    with folder_lock(export_copy, "export"):
        r = invoke(["bench", str(export_copy), "--on", f"cmd:{python_there}", "--iters", "2", "--warmup", "1"])
    assert r.exit_code == 0, r.output
    assert "not recorded in manifest.json" in r.output
    assert (export_copy / "manifest.json").read_bytes() == before


def test_companions_travel_with_their_file(tmp_path):
    """OpenVINO's graph is shipped with its weights beside it (the ARM run once lacked them)."""
    from tlexport.remote.verify import Item

    (tmp_path / "model.xml").write_text("<net/>")
    (tmp_path / "model.bin").write_bytes(b"\0")
    item = Item("model.xml", "openvino", "fp32", "openvino", tmp_path / "model.xml")
    assert item.files() == {"model.xml": tmp_path / "model.xml", "model.bin": tmp_path / "model.bin"}


# A target whose agent made its folder and said `hello` but did not remove the folder when its
# input ended (it lost a race with its own last writes); anything else (the cleanup command) runs.
FAKE_AGENT = r'''
import json, os, sys, tempfile
code, token = sys.argv[2], sys.argv[3]
if "mkdtemp(prefix=" in code:
    d = tempfile.mkdtemp(prefix="tlexport-agent-%s-" % token)
    print("@tlexport " + json.dumps({"event": "hello", "dir": d, "pid": os.getpid()}), flush=True)
    sys.stdin.buffer.read()
    sys.exit(4)
sys.argv = ["-c", *sys.argv[3:]]
exec(compile(code, "<cleanup>", "exec"))
'''


def test_a_folder_the_host_heard_of_only_after_the_ctrl_c_is_swept(tmp_path, monkeypatch):
    """The Ctrl-C comes before the host's main thread has read `hello`: the folder's name is
    still known when the host lets go (the event reader records it), so the sweep by token runs
    and removes what the target left."""
    fake = tmp_path / "fake_agent.py"
    fake.write_text(FAKE_AGENT)
    there = tmp_path / "target-tmp"
    there.mkdir()
    monkeypatch.setenv("TMPDIR", str(there))
    s = remote_session.Session(parse(f"cmd:{sys.executable} {fake}"))
    s.start(b"")
    deadline = time.monotonic() + 60
    while not any(there.iterdir()):  # made, and `hello` written: no event was read on this thread
        assert s.proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    s.finish(clean=False)
    assert s.folder and list(there.iterdir()) == []


# ---- the device records follow the files' bytes --------------------------------------------------
def _device(name="board", emulated=False) -> dict:
    return {"hostname": name, "machine": "aarch64", "emulated": emulated}


def _rows(**p50):
    """Bench rows as bench_on makes them: one per file at batch 1."""
    return [{"file": f, "runtime": "onnxruntime", "precision": "fp32", "p50_ms": ms, "p90_ms": ms, "batch_size": 1}
            for f, ms in p50.items()]


def _verified_and_timed(export_copy: Path):
    """model.onnx recorded as verified and timed (3 ms) on the device "board" reached as cmd:python3."""
    from types import SimpleNamespace

    from tlexport.remote.record import record_bench, record_parity

    target = parse("cmd:python3")
    passed = SimpleNamespace(skipped_reason=None, artifact=str(export_copy / "model.onnx"), runtime="onnxruntime",
                             precision="fp32", passed=True, failures=[])
    record_parity(export_copy, target, _device(), [passed])
    record_bench(export_copy, target, _device(), _rows(**{"model.onnx": 3.0}))
    return target


def test_a_result_for_other_bytes_starts_the_row_afresh(export_copy, tmp_path):
    from tlexport.remote.record import fastest_on, record_bench

    target = _verified_and_timed(export_copy)
    path, why = fastest_on(export_copy, "cmd:python3")
    assert path == export_copy / "model.onnx", why
    manifest = json.loads((export_copy / "manifest.json").read_text())
    sha = next(a["sha256"] for a in manifest["artifacts"] if a["file"] == "model.onnx")
    assert manifest["devices"]["board-aarch64"]["files"]["model.onnx"]["sha256"] == sha
    # the file's bytes change (an export by other means, an older tlexport): the manifest says so
    for a in manifest["artifacts"]:
        if a["file"] == "model.onnx":
            a["sha256"] = "0" * 64
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    path, why = fastest_on(export_copy, "cmd:python3")
    assert path is None and "names no fastest file" in why  # the old verdict is not for these bytes
    record_bench(export_copy, target, _device(), _rows(**{"model.onnx": 2.0}))
    row = json.loads((export_copy / "manifest.json").read_text())["devices"]["board-aarch64"]["files"]["model.onnx"]
    assert row["sha256"] == "0" * 64 and row["p50_ms"] == 2.0 and "verified" not in row  # timed, not verified


def test_a_reexport_keeps_what_devices_said_of_files_it_did_not_touch(fake_run, export_copy):
    """Adding a format keeps the device records of the files already there; --replace drops them."""
    from tlexport.exporters.pipeline import export
    from tlexport.remote.record import fastest_on

    _verified_and_timed(export_copy)
    before = json.loads((export_copy / "manifest.json").read_text())["devices"]
    export(fake_run, formats=("onnx",), precisions=("fp16",), out=export_copy, verify=False)
    manifest = json.loads((export_copy / "manifest.json").read_text())
    assert {a["file"] for a in manifest["artifacts"]} >= {"model.onnx", "model.fp16.onnx"}
    assert manifest["devices"] == before
    assert fastest_on(export_copy, "cmd:python3")[0] == export_copy / "model.onnx"
    export(fake_run, formats=("onnx",), precisions=("fp16",), out=export_copy, verify=False, replace=True)
    assert "devices" not in json.loads((export_copy / "manifest.json").read_text())


def test_device_records_carried_by_bytes():
    from tlexport.tables.devices import carried

    devices = {"pi-aarch64": {"emulated": False, "fastest": "b.onnx", "files": {
        "a.onnx": {"sha256": "A", "verified": True, "p50_ms": 5.0, "batch_size": 1},
        "b.onnx": {"sha256": "B", "verified": True, "p50_ms": 2.0, "batch_size": 1},
        "c.onnx": {"sha256": "C", "verified": True, "p50_ms": 1.0, "batch_size": 1},
        "d.onnx": {"verified": True, "p50_ms": 0.5, "batch_size": 1}}},   # no sha: an unknown file
        "qemu-aarch64-emulated": {"emulated": True, "fastest": None, "files": {"b.onnx": {"sha256": "B"}}},
        "gone-x86_64": {"emulated": False, "files": {"c.onnx": {"sha256": "C", "verified": True}}},
        "junk": ["not", "a", "record"]}
    # a.onnx kept; b.onnx written again with other bytes; c.onnx removed; d.onnx carries no sha
    artifacts = [{"file": "a.onnx", "sha256": "A"}, {"file": "b.onnx", "sha256": "B2"}, {"file": "d.onnx", "sha256": "D"}]
    out = carried(devices, artifacts)
    assert set(out) == {"pi-aarch64"}
    assert set(out["pi-aarch64"]["files"]) == {"a.onnx"} and out["pi-aarch64"]["fastest"] == "a.onnx"
    assert carried(None, artifacts) == {} and carried(devices, []) == {}


# ---- a runtime that crashes takes only its own file with it -------------------------------------
def test_a_runtime_that_crashes_fails_only_its_file(torch_free_python, export_copy, remote_tmp, tmp_path):
    """The target's LiteRT segfaults on load (a stand-in package that kills itself with SIGSEGV):
    that file is an error naming the crash, model.onnx is still timed and checked."""
    fake = tmp_path / "crashing-litert" / "ai_edge_litert"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "interpreter.py").write_text("import os, signal\n\nclass Interpreter:\n    def __init__(self, **kw):\n"
                                         "        os.kill(os.getpid(), signal.SIGSEGV)\n")
    py = _wrapper(tmp_path, "crashy-py", f'TMPDIR={remote_tmp} PYTHONPATH={fake.parent} exec {torch_free_python} "$@"')
    shutil.copy(export_copy / "model.onnx", export_copy / "extra.tflite")
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["artifacts"].append({"file": "extra.tflite", "format": "tflite", "precision": "fp32"})
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    r = invoke(["bench", str(export_copy), "--on", f"cmd:{py}", "--iters", "2", "--warmup", "1",
                "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    rows = {x["file"]: x for x in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert rows["model.onnx"]["p50_ms"] > 0
    assert "the runtime crashed (SIGSEGV)" in rows["extra.tflite"]["error"], rows
    r = invoke(["parity", str(export_copy), "--on", f"cmd:{py}", "--max-images", "3", "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    results = {Path(x["artifact"]).name: x for x in json.loads((tmp_path / "p.json").read_text())["results"]}
    assert results["model.onnx"]["passed"] is True and results["extra.tflite"]["passed"] is False
    assert "crashed (SIGSEGV)" in " ".join(results["extra.tflite"]["failures"])
    assert list(remote_tmp.iterdir()) == []


def test_competing_load_on_the_target_is_named():
    from tlexport.remote import agent
    from tlexport.remote.verify import busy_note

    hz = os.sysconf("SC_CLK_TCK")
    # 2 s of timing: the machine was busy 3 s of CPU, this process 1 s of it -> 1 core of other work
    assert agent._competing((0, 0), (3 * hz, hz), 2.0) == 1.0
    assert agent._competing((0, 0), (hz, hz), 2.0) == 0.0 and agent._competing(None, (1, 1), 2.0) is None
    quiet = {"file": "a.onnx", "competing_load": 0.05}
    busy = {"file": "b.onnx", "competing_load": 0.9}
    assert busy_note([quiet], emulated=False) is None
    line = busy_note([quiet, busy], emulated=False)
    assert "1 of 2 timings" in line and "0.90 cores" in line and "b.onnx" in line
    assert busy_note([busy], emulated=True) is None  # an emulated target's timings are not speeds anyway


def test_a_run_on_a_target_is_never_silent(python_there, export_copy):
    """What is sent, and each file as it starts and ends, reach the progress callback."""
    from tlexport.remote.verify import bench_on

    seen = []
    bench_on(f"cmd:{python_there}", export_copy, iters=2, warmup=1, record=False,
             progress=lambda label, done, total: seen.append((label, done, total)))
    labels = [label.split(": ", 1)[1] for label, _, _ in seen]
    assert labels[0].startswith("sending ") and " MB (the agent, 1 file(s), the inputs)" in labels[0]
    assert labels[1:] == ["model.onnx (1/1)", "model.onnx done"] and [d for _, d, _ in seen] == [0, 0, 1]


def test_boards_that_share_a_hostname_are_two_devices():
    """Two boards that kept the hostname raspberrypi, and two venvs on one board, are separate
    records; the same board and Python is always the same one."""
    import re

    from tlexport.remote.record import device_key

    a = {"hostname": "raspberrypi", "machine": "aarch64", "machine_id": "1a2b3c4d", "python_path": "/usr/bin/python3"}
    other_board, other_venv = {**a, "machine_id": "99ff00ee"}, {**a, "python_path": "/home/pi/tlx/bin/python"}
    assert len({device_key(a), device_key(other_board), device_key(other_venv)}) == 3
    assert re.fullmatch(r"raspberrypi-aarch64-[0-9a-f]{8}", device_key(a)) and device_key(dict(a)) == device_key(a)
    assert device_key({"hostname": "box", "machine": "x86_64", "machine_id": None}) == "box-x86_64"
    assert device_key({**a, "emulated": True}).endswith("-emulated")


def test_predict_on_runs_the_in_graph_model_on_the_devices_decoding(python_there, export_copy, tiny_data, remote_tmp):
    """model.uint8.onnx (the file the Node.js app runs) takes the image decoded on the device, as
    local predict feeds it: the same top-k and probabilities."""
    val = tiny_data / "val"
    args = [str(export_copy / "model.uint8.onnx"), str(val), "--json", "--top-k", "3"]
    there = invoke(["predict", *args, "--on", f"cmd:{python_there}"])
    assert there.exit_code == 0, there.output
    here = json.loads(invoke(["predict", *args]).output)
    remote_rows = json.loads(there.output[there.output.index("["):])
    assert [r["image"] for r in remote_rows] == [r["image"] for r in here] and len(here) == 12
    for a, b in zip(remote_rows, here):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"])) < 1e-5
    assert list(remote_tmp.iterdir()) == []
