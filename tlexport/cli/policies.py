"""One policy per concern, shared by every command, so the same mistake gets the same exit code
and the same kind of one-line message whichever command it is made in (docs/cli.md lists them):

- a path the command line names that does not exist, or is a file where a folder is needed:
  `MissingInput`, exit 2 (`input_path`, `run_folder`);
- a folder that is not a tlexport export: `NotAnExport`, exit 2 (`export_folder`);
- a folder that is not a tlexport run: `NotARun`, exit 2 (`run_folder`);
- `--device cuda` where torch sees no GPU: `NoGPU`, exit 1, before any work
  (`tlexport.errors.require_gpu`, which the library's own checks share);
- an unknown runtime, precision or device name: exit 2, checked while the command line is
  parsed, through the same functions the library uses (`names`, `reference`);
- a number out of range or not a number: exit 2 while parsing (`Count`, `Number`, `counts`);
- two options that exclude each other: exit 2 (`exclusive`);
- report files (`--json FILE`, `--markdown FILE`, `--plot FILE`): `-` is stdout for text; the
  folder must exist; a report never replaces a folder, a model, weights or tlexport's own
  records; an existing report of that name is replaced atomically (`ReportFile`, `distinct`).
JSON output, printed or written, is `tlexport.render.json_text` (NaN and infinities as null).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import click

from ..errors import BadPath, MissingInput, NotARun, TlexportError, UsageError, os_cause, os_error, require_gpu  # noqa: F401 (require_gpu: a policy)
from ..run.layout import RUN_JSON as RUN_RECORD
from ..tables.metadata import MAX_BATCH  # a batch beyond the metadata's ceiling is a typo
from .common import STDOUT, split_list

# Files a report must never replace, whatever folder they are in: what parity, bench and predict
# read, and what train writes.
RECORD_NAMES = frozenset({"manifest.json", RUN_RECORD, "split.json", "checkpoint.pt"})
WEIGHT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth"})


# ---- paths --------------------------------------------------------------------------------------
def input_path(path, what: str, kind: str = "dir") -> Path:
    """`path` (`~` expanded) when it exists and is a folder (`kind="dir"`), a file ("file") or
    either ("any").

    Raises:
        MissingInput: it does not exist or is the other kind ("data folder X does not exist").
    """
    path = Path(path).expanduser()
    mode = path_mode(path, what)
    if mode is None:
        raise MissingInput(f"{what} {path} does not exist")
    if kind == "dir" and not stat.S_ISDIR(mode):
        raise MissingInput(f"{what} {path} is a file, not a folder")
    if kind == "file" and stat.S_ISDIR(mode):
        raise MissingInput(f"{what} {path} is a folder, not a file")
    return path


def path_mode(path, what: str) -> int | None:
    """The st_mode of a path the command line names (links followed), None when it does not
    exist. Python's Path.exists()/is_dir() raise on a name too long for the filesystem or a link
    loop: here every such error is one line naming the path and the cause, exit 2.

    Raises:
        BadPath: the path cannot be looked at (ENAMETOOLONG, ELOOP, ENOTDIR, EACCES...).
    """
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        err = os_error(e, path, "read", argument=True)
        raise BadPath(f"{what} {path}: {os_cause(e)}") if err.exit_code == 2 else err from None


def export_folder(path) -> Path:
    """An existing folder holding a tlexport export (manifest.json or a model file).

    Raises:
        MissingInput: it does not exist or is a file. NotAnExport: it holds neither.
    """
    from ..benchmark import check_export_dir  # the one definition of "holds an export"

    return check_export_dir(input_path(path, "export folder"))


def run_folder(path, what: str = "run folder") -> Path:
    """An existing folder holding a tlexport training run.

    Raises:
        MissingInput: it does not exist or is a file. NotARun: it has no run record.
    """
    path = input_path(path, what)
    if not (path / RUN_RECORD).is_file():
        raise NotARun(f"{path} is not a tlexport run (no {RUN_RECORD})")
    return path


# ---- names --------------------------------------------------------------------------------------
def _check_runtimes(values) -> tuple:
    from ..runtimes import check_names

    return check_names(values)


def _check_precisions(values) -> tuple:
    from ..tables.artifacts import check_precisions

    return check_precisions(values)


def _check_devices(values) -> tuple:
    from ..tables.artifacts import check_devices

    return check_devices(values)


NAME_CHECKS = {"runtime": _check_runtimes, "precision": _check_precisions, "device": _check_devices}


def names(kind: str):
    """Callback of a list option of runtime, precision or device names (repeatable and
    comma-separated, see `common.split_list`), validated while the command line is parsed by
    the library's own check (`tlexport.runtimes.check_names`, ...): an unknown name is exit 2
    before any folder is read."""
    check = NAME_CHECKS[kind]

    def callback(ctx, param, value):
        items = split_list(ctx, param, value)
        if items is None:
            return None
        try:
            return check(items)
        except UsageError as e:
            raise click.UsageError(str(e), ctx) from None

    return callback


def reference(ctx, param, value):
    """Callback of parity's --reference: NAME[/PRECISION[/DEVICE]], each part checked like the
    list options."""
    parts = str(value).split("/")
    try:
        if len(parts) > 3:
            raise UsageError(f"--reference {value!r}: use NAME, NAME/PRECISION or NAME/PRECISION/DEVICE")
        for kind, part in zip(("runtime", "precision", "device"), parts):
            NAME_CHECKS[kind]((part,))
    except UsageError as e:
        raise click.UsageError(str(e), ctx) from None
    return value


# ---- numbers ------------------------------------------------------------------------------------
def _rule(lo, hi, lo_open, integer: bool) -> str:
    noun = "an integer" if integer else "a finite number"
    if lo == 1 and hi is None and integer:
        return "a positive integer"
    if hi is not None:
        return f"{noun} from {lo} to {hi}"
    return f"{noun} {'>' if lo_open else '>='} {lo:g}"


def _fail(param, rule: str, value, ctx):
    option = param.opts[0] if param and param.opts else "the value"
    raise click.UsageError(f"{option} must be {rule}, got {value}", ctx)


class Count(click.ParamType):
    """An integer option in [lo, hi]: out of range or not an integer is exit 2, one message
    form for both ("--iters must be a positive integer, got 0")."""

    name = "integer"

    def __init__(self, lo: int = 1, hi: int | None = None):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        try:
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip())
        except ValueError:
            number = None
        if number is None or number < self.lo or (self.hi is not None and number > self.hi):
            _fail(param, _rule(self.lo, self.hi, False, True), value, ctx)
        return number


class Number(click.ParamType):
    """A finite float option above `lo` (or at it, unless `lo_open`): NaN, infinities, values
    out of range and words are exit 2 ("--duration must be a finite number > 0, got inf")."""

    name = "number"

    def __init__(self, lo: float = 0.0, lo_open: bool = False):
        self.lo, self.lo_open = lo, lo_open

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < self.lo or (self.lo_open and number == self.lo):
            _fail(param, _rule(self.lo, None, self.lo_open, False), value, ctx)
        return number


class CountOrWord(Count):
    """A count, or one fixed word (`--warmup auto|N`)."""

    def __init__(self, word: str, lo: int = 0):
        super().__init__(lo)
        self.word = word

    def convert(self, value, param, ctx):
        if value == self.word:
            return value
        try:
            return super().convert(value, param, ctx)
        except click.UsageError:
            _fail(param, f"{self.word!r} or {_rule(self.lo, None, False, True)}", value, ctx)


BATCH = Count(1, MAX_BATCH)


def counts(noun: str, hi: int | None = None):
    """Callback of a list option of counts (`--batch-sizes 1,8,32`): every item an integer from
    1 to `hi`."""
    item = Count(1, hi)

    def callback(ctx, param, value):
        items = split_list(ctx, param, value)
        if items is None:
            return None
        bad = [v for v in items if not v.lstrip("-").isdigit()]
        if bad:
            raise click.UsageError(f"{param.opts[0]} expects integers, got {', '.join(bad)}", ctx)
        try:
            return tuple(item.convert(v, None, ctx) for v in items)
        except click.UsageError:
            raise click.UsageError(f"{param.opts[0]}: every {noun} must be {_rule(1, hi, False, True)}, "
                                   f"got {', '.join(items)}", ctx) from None

    return callback


def exclusive(**given) -> None:
    """Refuse two options that exclude each other: `exclusive(data=..., random=...)` with both
    set is "give either --data or --random, not both" (exit 2)."""
    named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise UsageError(f"give either {' or '.join(named)}, not both")


# ---- report files -------------------------------------------------------------------------------

class ReportFile(click.ParamType):
    """Where a report goes: `-` is stdout (text reports only), anything else a file path that
    is checked while the command line is parsed, before the work that fills it: its folder
    exists, it is not a folder, and it is not a file tlexport reads or writes as a record (a
    model, weights, manifest.json, run.json, split.json). An existing report is replaced
    atomically."""

    name = "file"

    def __init__(self, stdout: bool = True):
        self.stdout = stdout

    def convert(self, value, param, ctx):
        option = param.opts[0] if param and param.opts else "the report"
        if value == STDOUT:
            if not self.stdout:
                raise click.UsageError(f"{option} cannot go to stdout ('-'); name a file", ctx)
            return value
        path = Path(value).expanduser()
        try:
            mode, folder = path_mode(path, option), path_mode(path.parent, option)
        except TlexportError as e:
            raise click.UsageError(str(e), ctx) from None
        if mode is not None and stat.S_ISDIR(mode):
            raise click.UsageError(f"{option} {path} is a folder; name a file", ctx)
        if folder is None or not stat.S_ISDIR(folder):
            raise click.UsageError(f"{option} {path}: the folder {path.parent} does not exist", ctx)
        if mode is not None and stat.S_ISSOCK(mode) or mode is not None and stat.S_ISBLK(mode):
            raise click.UsageError(f"{option} {path} is a socket or block device; name a file", ctx)
        if path.name in RECORD_NAMES or path.suffix in WEIGHT_SUFFIXES or _is_model(path):
            raise click.UsageError(f"{option} {path} would replace a file tlexport reads; name another file", ctx)
        return str(path)


def _is_model(path: Path) -> bool:
    from ..formats.files import is_model_name

    return is_model_name(path)  # manifest.json is one of RECORD_NAMES


def distinct(**reports) -> None:
    """Refuse two reports aimed at one destination (`--json x --markdown x`, or both `-`)."""
    seen: dict[str, str] = {}
    for name, value in reports.items():
        if value is None:
            continue
        key = value if value == STDOUT else str(Path(value).resolve())
        if key in seen:
            raise UsageError(f"--{seen[key]} and --{name} both write to {value}; give them different files")
        seen[key] = name
