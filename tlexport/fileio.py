"""Writing files so that they are either complete or absent (temp name + fsync + os.replace),
locking a folder against a second writer, cleaning what killed processes left behind, and
reading JSON / YAML that anyone may have written with bounds on size and nesting."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
from pathlib import Path

from .errors import ArtifactError, DiskFull, FileSystemError, TlexportError, os_error  # noqa: F401 (DiskFull: re-exported)

LOCK_FILE = ".tlexport.lock"
# Temporary names carry the writer's pid, so leftovers of a dead process can be told apart.
TMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)$")
STAGING_PATTERN = re.compile(r"^\.tlexport-staging-(\d+)$")


class FolderLocked(TlexportError):
    """Another live process is writing the folder."""


def _tmp_name(path: Path) -> Path:
    """The temporary sibling of `path`: `.NAME.tmp-PID`, with NAME shortened (and a hash of it
    kept) when the file's own name is near the filesystem's 255-byte limit, so a name that fits
    does not fail for its temporary's sake."""
    name = path.name
    if len(name.encode()) > 200:
        import hashlib

        name = f"{name[:60]}~{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return path.with_name(f".{name}.tmp-{os.getpid()}")


def _remove_quietly(path: Path) -> None:
    """Remove a temporary file while another error is on its way: its own failure (gone already,
    read-only filesystem, a name too long to have been created) must not replace the first."""
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path in the same folder; on success it replaces `path`, on error it is
    removed. For libraries that insist on writing to a file name themselves (onnx.save, ...).
    OS errors of the temporary's creation, sync or rename come out as they are (callers map
    them with `errors.os_error`, naming `path`)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp)


def _write(f, data: bytes) -> None:
    """The one place bytes reach the disk (a seam for tests that simulate a full disk)."""
    f.write(data)


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically.

    Raises:
        FileSystemError: any OS error (DiskFull for no space or quota; EFBIG, EROFS, EACCES,
            ENAMETOOLONG... each named), one line naming the file; the old file, if any, is
            untouched and no temporary is left.
    """
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            _write(f, data)
    except OSError as e:
        raise os_error(e, path) from None


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path | str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ---- report files: through devices, FIFOs and links ------------------------------------------------
def report_target(path: Path | str) -> tuple[str, Path]:
    """How a report reaches `path`: ("replace", FILE) for a new path or a regular file, FILE being
    what a symbolic link points to (the link stays a link); ("through", path) for a character
    device, a FIFO or a link to one (/dev/null, /proc/self/fd/1), written in place. A socket or
    other special file is refused.

    Raises:
        FileSystemError / BadPath: the path cannot be looked at, or is a kind of file a report
            cannot go to.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        return "replace", Path(os.path.realpath(path)) if path.is_symlink() else path
    except OSError as e:
        raise os_error(e, path, "write", argument=True) from None
    if stat.S_ISREG(st.st_mode):
        real = Path(os.path.realpath(path))
        # a link into /proc names an open file of a process (stdout): write into it, never rename
        return ("through", path) if real.parts[1:2] == ("proc",) else ("replace", real)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return "through", path
    raise FileSystemError(f"cannot write {path}: it is {_kind(st.st_mode)}, not a file a report can go to")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def write_report_bytes(path: Path | str, data: bytes) -> Path:
    """Write a report: atomically (temp + replace) for a regular file or a new path, in place
    for a device or FIFO (see `report_target`). A FIFO nobody reads is refused at once instead
    of blocking. Returns the path written (a link's target for a link to a regular file)."""
    how, target = report_target(path)
    if how == "replace":
        write_bytes(target, data)
        return target
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_APPEND)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise FileSystemError(f"cannot write {path}: it is a FIFO and nothing is reading it") from None
        raise os_error(e, path) from None
    try:
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise os_error(e, path) from None
    finally:
        os.close(fd)
    return Path(path)


def sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- bounded readers of untrusted JSON and YAML ---------------------------------------------------
# Files tlexport writes nest at most about six levels. json.loads and yaml's composer recurse once
# per level, so a file of a hundred thousand `[` would end in RecursionError (or worse, deep in
# a caller's stack): the depth is measured by a linear scan *before* the parser runs.
MAX_DEPTH = 32
JSON_MAX_BYTES = 64 << 20  # callers with bigger legitimate files (split.json) pass their own
YAML_MAX_BYTES = 1 << 20  # a file of options
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def read_json(path: Path | str, max_bytes: int = JSON_MAX_BYTES, error: type[TlexportError] = ArtifactError,
              max_depth: int = MAX_DEPTH):
    """The parsed content of a JSON file that anyone may have written.

    Args:
        max_bytes: files larger than this are refused without being read whole.
        error: the error class raised (its exit code is the caller's policy: ArtifactError for a
            file inside an export or run, UsageError for a file the user passes as an option).
        max_depth: deepest nesting of lists and objects accepted.
    Raises:
        `error`: missing, unreadable, too large, nested too deeply or not JSON; one line naming
            the file.
    """
    return parse_json(read_capped(Path(path), max_bytes, error), path, max_bytes, error, max_depth)


def parse_json(data: bytes | str, source, max_bytes: int = JSON_MAX_BYTES,
               error: type[TlexportError] = ArtifactError, max_depth: int = MAX_DEPTH):
    """`read_json` for JSON text that arrives inside something else (a model's metadata
    property); `source` names it in the message."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{source} is too large ({len(raw)} bytes; at most {max_bytes} are read)")
    if json_depth(raw, max_depth) > max_depth:
        raise error(f"{source} is nested too deeply (more than {max_depth} levels)")
    try:
        return json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{source} is not valid JSON ({str(e).splitlines()[0][:120]})") from None


def json_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep lists and objects nest in JSON text, without parsing it: brackets outside
    strings are counted in one pass over them. Stops early once the depth passes `limit`, and
    when the text cannot be one JSON value (a bracket closes what never opened, or a second
    value follows the first): the parser then reports that."""
    depth = deepest = 0
    for b in _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET):
        depth += 1 if b in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
        elif depth <= 0:
            break
    return deepest


def read_yaml(path: Path | str, max_bytes: int = YAML_MAX_BYTES, error: type[TlexportError] = ArtifactError,
              max_depth: int = MAX_DEPTH):
    """The parsed content of a YAML file (`yaml.safe_load`) that anyone may have written: size
    and depth bounded as in `read_json`, measured on yaml's event stream (its parser is a loop,
    its composer recursion) before anything is built; aliases (`*name`) are refused, since a few
    of them expand to gigabytes once the result is copied or written out as JSON.

    Raises:
        `error`: missing, unreadable, too large, too deep, with aliases, or not YAML.
    """
    import yaml

    text = read_capped(Path(path), max_bytes, error).decode("utf-8", errors="replace")
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise error(f"{path} uses a YAML alias (*{event.anchor}); write the value out instead")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise error(f"{path} is nested too deeply (more than {max_depth} levels)")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as e:  # multi-line messages with a caret diagram: keep the first line
        raise error(f"{path} is not valid YAML ({str(e).strip().splitlines()[0][:120]})") from None


def read_capped(path: Path | str, max_bytes: int, error: type[TlexportError] = ArtifactError) -> bytes:
    """The bytes of a file read as untrusted input (a model's side file, a specification): at most
    `max_bytes` are read, whatever its size claims; a larger file is refused with `error`."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) > max_bytes:
        raise error(f"{path} is too large (more than {max_bytes} bytes)")
    return data


# ---- processes ----------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (ours counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(folder: Path | str) -> list[Path]:
    """Remove temporary files (`.NAME.tmp-PID`) and export staging folders
    (`.tlexport-staging-PID`) in `folder` whose process is gone. Call it while holding the
    folder's lock. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = TMP_PATTERN.match(entry.name) or STAGING_PATTERN.match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


# ---- folder locks -------------------------------------------------------------------------------
_HELD: dict[str, int] = {}  # lock files this process holds -> fd (POSIX locks are per process)


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str = "folder"):
    """Hold `folder/.tlexport.lock` for the duration of the block.

    A POSIX record lock (fcntl.lockf) on the lock file: the kernel drops it when the holder dies
    (kill -9 included) and forked children (data-loader workers) do not inherit it, so a dead
    process never blocks the folder; its leftover lock file is simply taken over. The file holds
    the holder's pid and host for the message. Where fcntl is missing, an O_EXCL lock file whose
    pid is no longer alive is treated as stale.

    Raises:
        FolderLocked: another live process holds the lock (one-line message naming it).
    """
    path = Path(folder) / LOCK_FILE
    key = str(path.resolve())
    if key in _HELD:
        raise FolderLocked(f"{folder} is already being written by this process ({what})")
    fd = _acquire(path, folder, what)
    _HELD[key] = fd
    try:
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):  # its own failure must not hide the block's error
            path.unlink()  # before closing: a waiter that opened the old file re-checks the inode
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        return "another process"
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


def _acquire(path: Path, folder, what: str) -> int:
    try:
        import fcntl
    except ImportError:  # no POSIX locks: O_EXCL with pid-based stale detection
        return _acquire_excl(path, folder, what)
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only filesystem, no inode left, no permission
            raise os_error(e, folder, "lock") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FolderLocked(f"{folder} is being written by another tlexport {what} ({_holder(path)}); "
                               f"wait for it to finish or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked while we waited
            _stamp(fd, path, folder)
            return fd
        os.close(fd)
    raise FolderLocked(f"cannot lock {folder}: its lock file keeps changing")


def _acquire_excl(path: Path, folder, what: str) -> int:
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if not isinstance(e, FileExistsError):
                raise os_error(e, folder, "lock") from None
            text = _holder(path)
            pid = int(text.split()[1]) if text.startswith("pid ") else -1
            if pid_alive(pid):
                raise FolderLocked(f"{folder} is being written by another tlexport {what} ({text}); "
                                   "wait for it to finish or choose another folder") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its process is gone
            continue
        _stamp(fd, path, folder)
        return fd
    raise FolderLocked(f"cannot lock {folder}: its lock file keeps changing")


def _stamp(fd: int, path: Path, folder) -> None:
    """Write the holder's pid and host into the lock file just taken. On a full disk (or any
    other write error) the lock is given up and its file removed: a lock taken and not used must
    not stay behind."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError as e:
        _remove_quietly(path)
        os.close(fd)
        raise os_error(e, path, "lock") from None
