"""The one-line status of long work (export, eval): a spinner, what runs now with its counts
("ExecuTorch int8 · trial 1/≤3 (all int8) · calibrating 96/256 images"), how long this stage has
taken and the total. The clocks tick even while a converter says nothing for minutes, so a slow
stage reads as slow, not hung."""

from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StatusLine:
    """A transient rich status line fed `tlexport.progress.Status` lines (or plain strings).

    Use as a context manager and call it with each status: `with StatusLine(con) as show:
    export(..., progress=show)`. `ticking=False` draws only when a status arrives (no refresh
    thread: work that forks worker processes, such as the image check, forks no running thread).
    """

    def __init__(self, con, disable: bool = False, first: str = "", ticking: bool = True):
        from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn
        from rich.table import Column
        from rich.text import Text

        class Clocks(ProgressColumn):
            def render(self, task):
                stage = time.monotonic() - task.fields["since"]
                return Text(f"{_clock(stage)} (total {_clock(time.monotonic() - task.fields['started'])})",
                            style="progress.elapsed")

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}", table_column=Column(overflow="fold", ratio=1)),
                            Clocks(), console=con, transient=True, disable=disable, expand=True,
                            auto_refresh=ticking)
        now = time.monotonic()
        self.task = self.bar.add_task(first, total=None, since=now, started=now)
        self.stage = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, status) -> None:
        from rich.markup import escape

        stage = getattr(status, "stage", status)
        fields = {}
        if stage != self.stage:  # a new stage restarts its clock (a new count does not)
            self.stage = stage
            fields["since"] = getattr(status, "since", None) or time.monotonic()
        self.bar.update(self.task, description=escape(str(status)), **fields)
        if not self.bar.live.auto_refresh:
            self.bar.refresh()
