"""What every command shares: the error boundary, consoles, list options, JSON output (the
policies every command applies to its inputs are in `policies`)."""

from __future__ import annotations

import functools
import os
import sys
import traceback

import click

from ..procs import Terminated, signals_unwind
from ..errors import PATH_ERRNOS, TlexportError, first_line, os_error

# Tables are wide (parity has 14 columns); in a log, a pipe or CliRunner there is no terminal
# width to respect, so every console uses this width there instead of squashing to 80.
WIDTH_WITHOUT_TERMINAL = 180
# A report option (--json FILE, --markdown FILE) given this name writes to stdout instead.
STDOUT = "-"


class Context:
    def __init__(self, debug: bool):
        self.debug = debug


def error_boundary(fn):
    """Turn library errors into one line and an exit code; --debug re-raises with a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import quiet

        debug = click.get_current_context().find_object(Context).debug
        quiet.configure(debug)  # third-party warnings and C++ logs off the terminal, unless --debug
        try:
            with signals_unwind():  # SIGTERM/SIGHUP unwind like Ctrl-C: browsers and pools are stopped
                return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except TlexportError as e:
            if debug:
                traceback.print_exc()
            fail(str(e), e.exit_code)
        except Terminated as e:
            fail(f"terminated by {e}", e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as e:  # one mapping for what the OS refused where no layer below named it
            if debug:
                traceback.print_exc()
            err = os_error(e, action="use", argument=e.errno in PATH_ERRNOS)
            fail(str(err), err.exit_code)
        except Exception as e:  # a bug or an unforeseen environment problem: still one line
            if debug:
                traceback.print_exc()
            fail(f"unexpected {type(e).__name__}: {first_line(e, 300)} (run with --debug for the traceback)", 1)

    return wrapper


def fail(message: str, code: int):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def emit_json(obj) -> None:
    """Print `obj` on stdout as JSON: the same text a report file gets (`render.json_text`)."""
    from ..render import json_text

    click.echo(json_text(obj))


def write_report(destination: str, text: str) -> None:
    """A text report to a file (atomically) or, for `-`, to stdout."""
    from ..render import write_text_report

    if destination == STDOUT:
        click.echo(text)
    else:
        write_text_report(destination, text)


def write_json(destination: str, report) -> None:
    """A report (an object with .to_dict() or a dict) as JSON to a file or, for `-`, to stdout."""
    from ..render import write_json_report

    if destination == STDOUT:
        emit_json(report.to_dict() if hasattr(report, "to_dict") else report)
    else:
        write_json_report(destination, report)


def console(quiet: bool = False, stderr: bool = True):
    """A rich console (stderr for progress and reports, stdout for results), wide off a terminal.

    It writes to its own duplicate of the terminal's file descriptor: while a converter's C++
    chatter is sent to a scratch file (`tlexport.quiet.silenced` points fds 1 and 2 there), the
    progress line keeps moving instead of freezing for the minutes the converter runs."""
    from rich.console import Console

    con = Console(file=_steady(sys.stderr if stderr else sys.stdout), quiet=quiet, highlight=False)
    if not con.is_terminal and not os.environ.get("COLUMNS", "").isdigit():  # COLUMNS: the width asked for
        con.width = max(con.width, WIDTH_WITHOUT_TERMINAL)
    else:
        con.width = con.width  # measured now: while fds 1/2 are redirected the terminal cannot be asked
    return con


_STEADY: dict = {}


def _steady(stream):
    """A text stream on a private duplicate of `stream`'s file descriptor (one per descriptor per
    process), or `stream` itself when it has none (CliRunner, a StringIO: nothing at the fd level
    can redirect those)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    if fd not in _STEADY:
        stream.flush()
        _STEADY[fd] = os.fdopen(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                                errors="replace", buffering=1)
    return _STEADY[fd]


# The tables fit the terminal (rows name their file whole); --wide shows every column instead.
wide_option = click.option("--wide", is_flag=True, help="Every column in the terminal table (default: the columns "
                           "that fit the terminal; file and architecture names are never cut).")


def split_list(ctx, param, value):
    """Callback of every list option: repeated flags and comma-separated values both work
    (`--precision fp32,int8` = `--precision fp32 --precision int8`). Returns a tuple, or None
    when the option was not given."""
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else tuple(value)
    items = tuple(v.strip() for text in values for v in str(text).split(",") if v.strip())
    return items or None


def list_option(*names, **kwargs):
    """A repeatable option that also takes comma-separated values (see split_list)."""
    kwargs.setdefault("callback", split_list)
    return click.option(*names, multiple=True, **kwargs)


def given(param: str) -> bool:
    """Whether the user typed this option (rather than getting its default)."""
    source = click.get_current_context().get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"


def show_predictions(result, as_json: bool) -> None:
    """The predictions on stdout (a table or JSON), unreadable images on stderr, exit 1 if any:
    the same for a local run and one `--on` a target."""
    from ..render import predict_table

    if as_json:
        emit_json(result.results)
    else:
        predict_table(console(stderr=False), result)
    for e in result.errors:
        console().print(f"cannot read {e['image']}: {e['error']}", style="red", markup=False, highlight=False)
    if result.errors:
        sys.exit(1)


class ParityProgress:
    """Transient rich progress bars on a terminal, one per label, fed by progress(label, done, total)
    (parity's runtimes; `staged` keeps a target's stages on one line)."""

    def __init__(self, con, quiet):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            console=con, transient=True, disable=quiet or not con.is_terminal)
        self.tasks = {}

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, label, done, total):
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(label, total=total)
        self.bar.update(self.tasks[label], completed=done)

    def staged(self, prefix: str):
        """A callback that keeps the labels starting with `prefix` (a target's stages: sending,
        each file) on one line whose text changes; other labels get their own line as before."""
        def progress(label, done, total):
            if not label.startswith(prefix):
                return self(label, done, total)
            if prefix not in self.tasks:
                self.tasks[prefix] = self.bar.add_task(label, total=total)
            self.bar.update(self.tasks[prefix], description=label, completed=done, total=total)
        return progress
