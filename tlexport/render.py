"""Every rendering of tlexport's results: rich terminal tables, Markdown, JSON files and plots.

Library functions return result objects; this module turns them into text and pictures, and the
CLI prints what it returns. It sits on the bottom floor beside `fileio`: it imports nothing else
of tlexport and reads result objects by their attributes, so any layer may write a plot or a
report file. Importing it is cheap: rich and matplotlib are imported inside the functions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# ---- shared ------------------------------------------------------------------------------------


def json_safe(obj):
    """Recursively replace NaN/Inf (not valid JSON) by None, numpy scalars and arrays by Python
    numbers and lists, and paths by strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist) and not isinstance(obj, (str, bytes)):
        return json_safe(obj.tolist())  # a numpy array or scalar (scalars give a Python number)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_text(obj) -> str:
    """The one JSON rendering of every command's output, printed or written to a file: strict
    JSON (NaN and infinities become null, so any parser reads it), indented, objects of other
    types (dates, enums) as their str()."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str)


def write_json_report(path: Path | str, report) -> Path:
    """Write a report (an object with .to_dict() or a dict) as JSON (`json_text`): atomically to
    a regular file, in place to a device, FIFO or a link to one (`fileio.write_report_bytes`).

    Returns:
        The path written.
    """
    data = report.to_dict() if hasattr(report, "to_dict") else report
    return write_text_report(path, json_text(data) + "\n")


def write_text_report(path: Path | str, text: str) -> Path:
    """Write a Markdown (or any text) report: atomically to a regular file or a new path, in
    place to a device or FIFO, through a symbolic link (which stays a link)."""
    from .fileio import write_report_bytes

    path = Path(path).expanduser()
    write_report_bytes(path, text.encode())
    return path


def fmt_num(value, digits: int = 3) -> str:
    """Compact number for tables: '-' for missing, '2.1e-05' for tiny, '12.3' for normal."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def fmt_pct(value, decimals: int = 1) -> str:
    return "-" if value is None else f"{value:.{decimals}f}%"


def fmt_delta(value, decimals: int = 1) -> str:
    return "-" if value is None else f"{value:+.{decimals}f}"


# ---- tables that fit the terminal -----------------------------------------------------------------
# A column: (header, justify, priority). When the table is wider than the console, the columns of
# lowest priority go first; the "file" column (priority FILE) is never dropped and never cut: a
# name longer than the room left folds onto a second line instead of ending in "…".
FILE = 1000
_CELL_PADDING = 3  # rich's default padding (1 each side) and one border character per column


def _cell_len(text: str) -> int:
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in str(text).split("\n")), default=0)


def fitted_table(title: str, columns: list[tuple[str, str, int]], rows: list[list[str]], width: int | None,
                 caption: str | None = None, row_styles: list | None = None, hidden=()):
    """A rich Table of the columns that fit `width` (None: all of them), dropping the lowest
    priorities first; the caption names what `--wide` adds: the dropped headers and `hidden`
    (columns only the wide table has)."""
    from rich.table import Table

    need = [max([_cell_len(h)] + [_cell_len(r[i]) for r in rows]) + _CELL_PADDING for i, (h, _, _) in enumerate(columns)]
    keep = list(range(len(columns)))
    if width is not None:
        for i in sorted(keep, key=lambda i: columns[i][2]):
            if sum(need[k] for k in keep) + 1 <= width or columns[i][2] >= FILE:
                break
            keep.remove(i)
    dropped = [columns[i][0] for i in range(len(columns)) if i not in keep] + list(hidden)
    if dropped:
        caption = (caption + "; " if caption else "") + f"--wide adds: {', '.join(dropped)}"
    # --wide (width None): every column at its natural width, even past the terminal's edge (printed
    # uncropped, the terminal wraps the lines): squeezed into 80 columns, 15 headers read "runt…".
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  width=sum(need) + 1 if width is None else None)
    for i in keep:
        header, justify, priority = columns[i]
        if priority >= FILE:  # whole: folded only when the terminal is narrower than the name itself
            name_width = need[i] - _CELL_PADDING
            table.add_column(header, justify=justify, overflow="fold", min_width=min(name_width, width or name_width))
        else:  # every kept column has its room
            table.add_column(header, justify=justify, no_wrap=True)
    for n, r in enumerate(rows):
        table.add_row(*[r[i] for i in keep], style=(row_styles[n] if row_styles else None))
    return table


# ---- parity ------------------------------------------------------------------------------------
PARITY_COLUMNS = ("runtime", "precision", "device", "file", "max abs", "mean abs", "max rel", "cos min",
                  "top-1", "top-5", "acc", "Δacc", "batch", "meta", "result")


def _artifact_name(r, report) -> str:
    """The row's file relative to the export folder (two rows of one runtime and precision, e.g.
    onnxruntime on model.onnx and on model.ort, differ only here); "weights" for torch-eager."""
    from pathlib import Path

    if not getattr(r, "artifact", None):  # a runtime skipped before it found a file has none
        return "-" if getattr(r, "skipped_reason", None) is not None else "weights"
    path = Path(r.artifact)
    try:
        return path.relative_to(Path(report.export_dir)).as_posix() if report.export_dir else path.name
    except ValueError:
        return path.name


def _parity_cells(r, report) -> list[tuple[str, bool]]:
    """Cells of one parity row as (text, failing) pairs; failing cells are marked red."""
    fail_text = " ".join(r.failures)
    tol_fail = r.within_tolerance is False and "outside atol" in fail_text
    top1_fail = "top-1 agreement" in fail_text
    return [
        (r.runtime, False), (r.precision, False), (r.device, False), (_artifact_name(r, report), False),
        (fmt_num(r.max_abs), tol_fail), (fmt_num(r.mean_abs), False), (fmt_num(r.max_rel), tol_fail),
        ("-" if r.cosine_min is None else f"{r.cosine_min:.6f}", r.finite is False),
        (fmt_pct(r.top1_agreement, 2), top1_fail), (fmt_num(r.top5_overlap), False),
        (fmt_pct(r.accuracy), False), (fmt_delta(r.accuracy_delta), "accuracy" in fail_text),
        (_yes_no(r.batch_independent), r.batch_independent is False),
        (_yes_no(r.metadata_ok), r.metadata_ok is False),
        ("PASS" if r.passed else "FAIL", not r.passed),
    ]


def _who(r, report) -> str:
    """A parity row in words: its file (when it has one), then runtime, precision and device."""
    name = _artifact_name(r, report)
    return f"{r.runtime} {r.precision} {r.device}" if name == "-" else f"{name} ({r.runtime} {r.precision} {r.device})"


def _yes_no(value) -> str:
    return "-" if value is None else ("ok" if value else "NO")


# The compact parity table: the file always, then what says pass or fail and why.
PARITY_COMPACT = {"file": FILE, "result": 90, "runtime": 80, "top-1": 70, "max abs": 60, "Δacc": 55,
                  "precision": 50, "device": 40}


def parity_table(report, width: int | None = None, wide: bool = False):
    """A rich Table: one row per runtime x precision x device; failing cells red, skipped dim.
    Compact by default (file, runtime, precision, max abs, top-1, Δacc, result; device when more
    than one), fitted to `width`; `wide` adds every column (as Markdown and JSON have them)."""
    title = (f"Parity vs {report.reference} on {report.images} images ({report.source}); "
             f"fp32 atol={report.atol:g} rtol={report.rtol:g}")
    devices = {r.device for r in report.results}
    names = [c for c in PARITY_COLUMNS if wide or (c in PARITY_COMPACT and (c != "device" or len(devices) > 1))]
    names = ["file"] + [c for c in names if c != "file"]
    columns = [(c, "left" if c in ("runtime", "precision", "device", "file") else "right",
                FILE if c == "file" else PARITY_COMPACT.get(c, 10)) for c in names]
    rows, styles = [], []
    for r in report.results:
        if r.skipped_reason is not None:
            # Reasons are long: they are listed under the table, not squeezed into a cell.
            cells = dict(zip(PARITY_COLUMNS, (r.runtime, r.precision, r.device, _artifact_name(r, report))))
            rows.append([_esc(cells.get(c, "skipped" if c == "result" else "-")) for c in names])
            styles.append("dim")
            continue
        cells = {c: (f"[bold red]{_esc(t)}[/]" if bad else (f"[green]{t}[/]" if t == "PASS" else _esc(t)))
                 for c, (t, bad) in zip(PARITY_COLUMNS, _parity_cells(r, report))}
        rows.append([cells[c] for c in names])
        styles.append(None)
    hidden = [c for c in PARITY_COLUMNS if c not in names]
    return fitted_table(title, columns, rows, None if wide else width, row_styles=styles, hidden=hidden)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def render_parity(report, console, max_flips: int = 20, wide: bool = False) -> None:
    """Print the parity table (fitted to the console; `wide`: every column), flipped images,
    failures, notes and a final PASS/FAIL line."""
    console.print(parity_table(report, console.width, wide), crop=False)
    if report.reference_accuracy is not None:
        console.print(f"Reference accuracy: {report.reference_accuracy:.2f}%")
    for r in report.compared:
        if r.flips:
            console.print(f"[bold]{_esc(_who(r, report))}[/]: top-1 flips on {len(r.flips)} image(s):")
            for f in r.flips[:max_flips]:
                console.print(f"  {_esc(f['image'])}: reference {_esc(f['reference'])} -> "
                              f"{_esc(f['runtime'])} (reference margin {f['reference_margin']:.3g})")
            if len(r.flips) > max_flips:
                console.print(f"  ... and {len(r.flips) - max_flips} more (see --json)")
    for r in report.compared:
        for reason in r.failures:
            console.print(f"[red]FAIL[/] {_esc(_who(r, report))}: {_esc(reason)}")
    for r in report.skipped:
        console.print(f"[dim]skipped {_esc(_who(r, report))}: {_esc(r.skipped_reason)}[/]")
    for s in report.skipped_images:
        console.print(f"[yellow]skipped image[/] {_esc(s['image'])}: {_esc(s['reason'])}")
    for note in report.notes:
        console.print(f"[yellow]note[/]: {_esc(note)}")
    n_ok = sum(1 for r in report.compared if r.passed)
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    console.print(f"{verdict}: {n_ok}/{len(report.compared)} runtime(s) within their gates, "
                  f"{len(report.skipped)} skipped")


def parity_markdown(report) -> str:
    """The parity report as a Markdown table (for CI summaries and benchmarks/results)."""
    lines = [
        f"### Parity vs {report.reference}: {'PASS' if report.passed else 'FAIL'}",
        "",
        f"{report.images} images ({report.source}); fp32 gate atol={report.atol:g}, rtol={report.rtol:g}.",
        "",
        "| " + " | ".join(PARITY_COLUMNS) + " |",
        "|" + "---|" * len(PARITY_COLUMNS),
    ]
    for r in report.results:
        if r.skipped_reason is not None:
            row = [r.runtime, r.precision, r.device, _artifact_name(r, report), f"skipped: {r.skipped_reason}"]
            row += [""] * (len(PARITY_COLUMNS) - len(row))
        else:
            row = [f"**{t}**" if bad else t for t, bad in _parity_cells(r, report)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    failures = [f"- {r.runtime}/{r.precision}/{r.device}: {f}" for r in report.compared for f in r.failures]
    if failures:
        lines += ["", "Failures:", *failures]
    if report.notes:  # where it ran (a device --on), what was compared how, what was recorded
        lines += ["", "Notes:", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


# ---- plots (matplotlib, headless Agg backend, written atomically) ------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot is imported
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path | str, dpi: int = 100) -> Path:
    """Write a figure as PNG and close it: rendered in memory, then written like every report
    (atomically, or in place to a device or FIFO), so a full disk or a read-only folder is one
    line naming the file and leaves nothing behind."""
    import io

    from .fileio import write_report_bytes

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        _pyplot().close(fig)
    write_report_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_curves(path: Path | str, history) -> Path:
    """Loss and accuracy per epoch (EpochStats rows), train and val side by side."""
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    ax1.plot(epochs, [h.val_loss for h in history], "o-", label="val")
    ax1.set(title="loss", xlabel="epoch")
    ax2.plot(epochs, [h.train_acc for h in history], "o-", label="train")
    ax2.plot(epochs, [h.val_acc for h in history], "o-", label="val")
    ax2.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


CONFUSION_TEXT_MAX = 30  # classes up to which every cell gets its count written
TOP_CONFUSIONS = 20  # pairs listed beside a matrix too large for per-cell text


def plot_confusion(confusion, classes: list[str], path: Path | str) -> Path:
    """The confusion matrix (rows: true class, columns: predicted). Up to CONFUSION_TEXT_MAX
    classes, every cell shows its count in a colour that contrasts with the cell (dark on light,
    light on dark); larger matrices are drawn as a picture of bounded size with no per-cell text
    or tick labels, beside a list of the most frequent confusions (a 1000-class matrix would
    otherwise be a million texts and minutes of drawing)."""
    import numpy as np

    plt = _pyplot()
    confusion = np.asarray(confusion)
    n = len(classes)
    if n > CONFUSION_TEXT_MAX:
        return _confusion_large(plt, confusion, classes, path)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(3.5, 0.6 * n + 1.5)))
    image = ax.imshow(confusion, cmap="Blues", vmin=confusion.min(initial=0), vmax=max(confusion.max(initial=0), 1))
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center",
                    color=text_colour(image.cmap(image.norm(confusion[i, j]))))
    fig.tight_layout()
    return _save(fig, path)


def text_colour(rgba) -> str:
    """Black on a light cell, white on a dark one: by the cell colour's relative luminance
    (sRGB, ITU-R BT.709 weights), not by the count, so any colour map reads right."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def top_confusions(confusion, classes: list[str], k: int = TOP_CONFUSIONS) -> list[tuple[str, str, int]]:
    """The k most frequent (true, predicted, count) pairs off the diagonal, most frequent first."""
    import numpy as np

    off = np.array(confusion, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [np.unravel_index(i, off.shape) for i in flat]
    return [(classes[i], classes[j], int(off[i, j])) for i, j in pairs if off[i, j] > 0]


def _confusion_large(plt, confusion, classes: list[str], path) -> Path:
    fig, (ax, side) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1, 1]})
    ax.imshow(confusion, cmap="Blues", interpolation="nearest")
    ax.set(xticks=[], yticks=[], xlabel=f"predicted ({len(classes)} classes)", ylabel="true",
           title="confusion matrix")
    side.axis("off")
    pairs = top_confusions(confusion, classes)
    lines = [f"{count:>6}  {true[:28]} -> {pred[:28]}" for true, pred, count in pairs] or ["no confusions"]
    side.text(0, 1, "most frequent confusions (count  true -> predicted)\n\n" + "\n".join(lines),
              va="top", ha="left", family="monospace", fontsize=9, transform=side.transAxes)
    fig.tight_layout()
    return _save(fig, path)


def plot_lr_find(path: Path | str, result) -> Path:
    """The LR range test (an LrFindResult): raw and smoothed loss against the LR on a log axis,
    with the suggested LR marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="C3", ls="--", label=f"suggested {result.suggested_lr:.2g} ({result.rule})")
    other = result.steepest_lr if result.rule == "min10" else result.min10_lr
    ax.axvline(other, color="C2", ls=":", label=f"{'steepest' if result.rule == 'min10' else 'min10'} {other:.2g}")
    ax.set_xscale("log")
    low, high = min(result.smoothed), max(result.smoothed[0], min(result.smoothed) * 4)
    ax.set(xlabel="learning rate", ylabel="loss", title="LR range test",
           ylim=(low - 0.05 * (high - low), high + 0.1 * (high - low) + 1e-9))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def lr_find_summary(con, result) -> None:
    """The suggestion and the rule that chose it, both rules' values, and any warning."""
    con.print(f"suggested lr [bold]{result.suggested_lr:.3g}[/bold]: {result.rule_text}")
    con.print(f"min-loss/10 {result.min10_lr:.3g}   steepest {result.steepest_lr:.3g}   "
              f"lowest loss at {result.min_loss_lr:.3g}   swept {result.start_lr:.2g}..{result.lrs[-1]:.2g} "
              f"in {result.steps} steps" + ("   (stopped: loss diverged)" if result.diverged else ""))
    if result.warning:
        con.print(f"[yellow]warning:[/yellow] {result.warning}")


def _plot_series(report) -> dict[str, list]:
    """Measured cells grouped by what was measured: one series per file (model.onnx and model.ort
    both run on onnxruntime fp32, and are two lines), runtime, device and session count."""
    series: dict[str, list] = {}
    for r in report.results:
        if r.error is None and r.p50_ms is not None:
            name = f"{r.artifact or 'weights'} · {r.runtime}" + ("" if r.device == "cpu" else f" {r.device}")
            series.setdefault(name + (f" ×{r.concurrency}" if r.concurrency > 1 else ""), []).append(r)
    for cells in series.values():
        cells.sort(key=lambda r: r.batch_size)
    return dict(sorted(series.items()))


def latency_vs_batch(report, path: Path | str, title: str | None = None) -> Path:
    """PNG of p50 latency (with p90 whiskers) and throughput: one line per file against batch
    size, or, when one batch size was measured, one bar per file (a line of one point says
    nothing). Cells measured beside competing load are marked (red ring, hatched bar, "noisy" in
    the legend); failed cells are left out.

    Args:
        report: a BenchReport (or anything with `.results` of BenchResult).
        path: the PNG to write.
    Returns:
        The written path.
    """
    plt = _pyplot()
    series = _plot_series(report)
    batches = sorted({r.batch_size for cells in series.values() for r in cells})
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.15 * max(len(series) - 8, 0)))
    if len(batches) == 1:
        _bench_bars(ax_lat, ax_thr, series, batches[0])
    else:
        _bench_lines(ax_lat, ax_thr, series, batches)
    fig.suptitle(title or "tlexport bench: latency and throughput" + ("" if len(batches) == 1 else " vs batch size"))
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def _bench_lines(ax_lat, ax_thr, series: dict, batches: list[int]) -> None:
    noisy_seen = False
    for label, cells in series.items():
        xs = [r.batch_size for r in cells]
        upper = [max(r.p90_ms - r.p50_ms, 0.0) for r in cells]
        line = ax_lat.errorbar(xs, [r.p50_ms for r in cells], yerr=[[0.0] * len(xs), upper], marker="o", capsize=3,
                               label=label)
        color = line[0].get_color()
        ax_thr.plot(xs, [r.throughput for r in cells], marker="o", color=color, label=label)
        for ax, values in ((ax_lat, [r.p50_ms for r in cells]), (ax_thr, [r.throughput for r in cells])):
            noisy = [(x, v) for x, v, r in zip(xs, values, cells) if r.noisy]
            if noisy:
                noisy_seen = True
                ax.scatter(*zip(*noisy), s=160, facecolors="none", edgecolors="red", linewidths=1.5, zorder=3,
                           label="noisy (busy machine): do not quote" if ax is ax_lat and noisy_seen else None)
    for ax, ylabel in ((ax_lat, "p50 latency, ms (bar: p90)"), (ax_thr, "throughput, images/s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])  # the measured sizes as plain numbers
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if series:
        handles, labels = ax_lat.get_legend_handles_labels()
        keep = dict(zip(labels, handles))  # the noisy entry once
        ax_lat.legend(keep.values(), keep.keys(), fontsize=7)


def _bench_bars(ax_lat, ax_thr, series: dict, batch: int) -> None:
    """One horizontal bar per file, its value written beside it; noisy bars hatched and marked."""
    labels = list(series)
    cells = [series[k][0] for k in labels]
    ys = list(range(len(labels)))
    whiskers = [[0.0] * len(cells), [max(r.p90_ms - r.p50_ms, 0.0) for r in cells]]
    for ax, values, unit in ((ax_lat, [r.p50_ms for r in cells], "ms"),
                             (ax_thr, [r.throughput for r in cells], "img/s")):
        bars = ax.barh(ys, values, color=[f"C{i % 10}" for i in ys], xerr=whiskers if ax is ax_lat else None,
                       capsize=3)
        for bar, r, v in zip(bars, cells, values):
            if r.noisy:
                bar.set_hatch("//")
                bar.set_edgecolor("red")
            end = max(v, r.p90_ms) if ax is ax_lat else v  # past the whisker
            ax.annotate(f" {v:.3g} {unit}" + (" (noisy)" if r.noisy else ""), (end, bar.get_y() + bar.get_height() / 2),
                        va="center", fontsize=7)
        ax.set_yticks(ys, labels if ax is ax_lat else [""] * len(ys), fontsize=7)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.25)
    ax_lat.set_xlabel(f"p50 latency at batch {batch}, ms (whisker: p90)")
    ax_thr.set_xlabel(f"throughput at batch {batch}, images/s")
    if any(r.noisy for r in cells):
        ax_lat.set_title("hatched: measured on a busy machine (noisy), do not quote", fontsize=8, color="red")


# ---- bench --------------------------------------------------------------------------------------
BENCH_COLUMNS = ("runtime", "precision", "device", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms",
           "std ms", "min ms", "img/s", "vs eager", "iters", "file", "size MB", "load s", "first ms",
           "warm-up", "peak MB", "streams", "other load")


def _bench_row(r) -> list[str]:
    f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    speed = "—" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}×"
    if r.error:
        return [r.runtime, r.precision, r.device, str(r.batch_size), "error: " + r.error] + [""] * 16
    warm = "—" if r.warmup_calls is None else f"{r.warmup_calls}" + ("" if r.warmup_stable is not False else " (unsettled)")
    load = f(r.competing_load) + (" noisy!" if r.noisy else "")
    return [r.runtime, r.precision, r.device, str(r.batch_size), f(r.p50_ms), f(r.p90_ms),
            f(r.p99_ms), f(r.mean_ms), f(r.std_ms), f(r.min_ms), f(r.throughput, 1), speed, str(r.iters),
            r.artifact or "(weights)", f(r.size_bytes and r.size_bytes / 1e6, 1), f(r.load_s, 3),
            f(r.first_call_ms), warm, f(r.peak_rss_mb, 1), str(r.concurrency), load]


def environment_line(env: dict) -> str:
    """One line saying where the numbers come from."""
    v = env.get("versions", {})
    gpu = env.get("gpu") or {}
    parts = [f"CPU {env.get('cpu')} ({env.get('usable_cores')} cores, {env.get('threads')} threads)"]
    if gpu:
        parts.append(f"GPU {gpu.get('name')} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda')})")
    parts.append(", ".join(f"{k} {val}" for k, val in v.items() if val))
    if env.get("load_average"):
        parts.append("load avg " + "/".join(str(x) for x in env["load_average"]))
    return " · ".join(parts)


def bench_markdown(report) -> str:
    """The report as Markdown: environment, table, skipped runtimes."""
    lines = ["# tlexport bench", "", environment_line(report.environment), "",
             "| " + " | ".join(BENCH_COLUMNS) + " |", "|" + "---|" * len(BENCH_COLUMNS)]
    for r in report.results:
        cells = _bench_row(r)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if report.skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['runtime']}/{s['precision']}/{s['device']}: {s['reason']}" for s in report.skipped]
    lines += _own_timers(report)
    bench_env = report.environment.get("bench", {})
    lines += ["", f"Warm-up {bench_env.get('warmup')} calls excluded; "
              f"{'%s iterations' % bench_env['iters'] if bench_env.get('iters') else '%s s per cell (min %s iterations)' % (bench_env.get('duration_s'), bench_env.get('min_iters'))}; "
              f"inputs rotate among {bench_env.get('inputs')} random-normal batches; "
              "speed-up = torch-eager fp32 p50 / p50 (same device and batch size). "
              f"Warm-up rule: {bench_env.get('warmup_rule')}. Memory: {bench_env.get('memory')}. "
              "Other load: CPU cores used by other processes while the cell ran.", ""]
    check = report.environment.get("load_check") or {}
    if getattr(report, "noisy", False):
        lines += [f"**Noisy:** other processes used more than {check.get('threshold_cores')} cores while cells "
                  f"marked noisy were measured (before the run: {check.get('before_cores')}); do not quote them.", ""]
    return "\n".join(lines)


def _own_timers(report) -> list[str]:
    """Markdown lines naming the cells a runtime timed itself (in a browser page), with the round
    trip seen from Python beside them."""
    own = [r for r in report.results if getattr(r, "timer", None) and not r.error]
    if not own:
        return []
    lines = ["", "Timed by the runtime where it ran (p50 of the round trip from Python in brackets):", ""]
    for r in own:
        trip = "" if r.wall_p50_ms is None else f" ({r.wall_p50_ms:.2f} ms)"
        lines.append(f"- {r.label} batch {r.batch_size}: {r.timer}{trip}")
    return lines


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


# The bench table: the file always (two onnxruntime fp32 rows are model.onnx and model.ort), then
# the numbers to compare; --wide adds the rest.
BENCH_TABLE = (("file", "left", FILE), ("runtime", "left", 85), ("prec", "left", 50), ("batch", "right", 75),
               ("p50 ms", "right", 90), ("p99 ms", "right", 60), ("img/s", "right", 70), ("speedup", "right", 80),
               ("first ms", "right", 30), ("peak MB", "right", 35), ("load", "right", 40))


def _bench_label(r) -> str:
    """The runtime cell: the runtime (and device off the CPU), with its marks."""
    label = r.runtime + ("" if r.device == "cpu" else f" {r.device}")
    label += f" ×{r.concurrency}" if r.concurrency > 1 else ""
    if getattr(r, "timer", None):
        label += " *"
    return label


def bench_table(report, width: int | None = None, wide: bool = False):
    """A rich Table of the results, one row per cell, fitted to `width` (`wide`: every column;
    Markdown and JSON hold them all). The file is never cut: model.onnx, model.ort and the
    Triton copy all run on onnxruntime fp32."""
    env = report.environment
    gpu = (env.get("gpu") or {}).get("name")
    caption = f"{env.get('cpu')}, {env.get('threads')} threads" + (f", {gpu}" if gpu else "")
    if env.get("load_average"):
        caption += f", load {env['load_average'][0]}"
    if getattr(report, "noisy", False):
        caption += "; ! = measured beside other busy processes (noisy)"
    if any(getattr(r, "timer", None) for r in report.results):
        caption += "; * = timed inside the runtime (a browser page's performance.now())"
    rows, styles = [], []
    for r in report.results:
        head = [_esc(r.artifact or "(weights)"), _esc(_bench_label(r)), r.precision, str(r.batch_size)]
        if r.error:
            rows.append(head + ["failed"] + [""] * (len(BENCH_TABLE) - 5))
            styles.append("red")
            continue
        speed = "—" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}×"
        mem = "—" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        first = "—" if r.first_call_ms is None else _ms(r.first_call_ms)
        load = "—" if r.competing_load is None else f"{r.competing_load:.2f}" + (" !" if r.noisy else "")
        rows.append(head + [_ms(r.p50_ms) + (" !" if r.noisy else ""), _ms(r.p99_ms), f"{r.throughput:.1f}", speed,
                            first, mem, load])
        styles.append("bold" if r.runtime == "torch-eager" else None)
    columns = [c for c in BENCH_TABLE if wide or c[0] != "load"]
    rows = [row[:len(columns)] for row in rows]
    return fitted_table("tlexport bench", columns, rows, None if wide else width, caption=caption, row_styles=styles,
                        hidden=[] if wide else ["load"])


# ---- train, eval, export, predict ----------------------------------------------------------------
def train_summary(con, result) -> None:
    """Per-epoch table and the best epoch of a TrainResult."""
    from rich.table import Table

    table = Table(title=f"run {result.run_dir}")
    for col in ("epoch", "phase", "train loss", "train acc", "val loss", "val acc", "img/s", "s"):
        table.add_column(col, justify="right")
    for h in result.history:
        best = " *" if h.epoch == result.best_epoch else ""
        table.add_row(str(h.epoch), h.phase, f"{h.train_loss:.4f}", f"{h.train_acc:.1%}", f"{h.val_loss:.4f}",
                      f"{h.val_acc:.1%}{best}", f"{h.images_per_s:.1f}", f"{h.seconds:.1f}")
    con.print(table)
    con.print(f"best val accuracy {result.best_val_accuracy:.1%} (epoch {result.best_epoch}); "
              f"weights: {result.weights_file}")


def eval_summary(con, result) -> None:
    """Accuracy, the per-class table and the confusion matrix of an EvalResult."""
    from rich.table import Table

    top5 = "" if result.top5 is None else f", top-5 {result.top5:.1%}"  # only with more than 5 classes
    con.print(f"{result.images} images ({result.data}): top-1 [bold]{result.top1:.1%}[/]{top5}")
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for row in result.per_class:
        table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    con.print(table)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for c in result.classes:
        cm.add_column(c[:10], justify="right")
    for c, row in zip(result.classes, result.confusion):
        cm.add_row(c, *[str(v) for v in row])
    con.print(cm)
    if result.skipped:
        con.print(f"[yellow]skipped {len(result.skipped)} unreadable image(s)[/]")
    con.print(f"confusion matrix image: {result.confusion_png}")


# The format is the first to go on a narrow terminal: the file's suffix says it.
EXPORT_TABLE = (("file", "left", FILE), ("format", "left", 40), ("precision", "left", 70), ("size", "right", 80),
                ("verified", "left", 90), ("max abs", "right", 50), ("top-1", "right", 60),
                ("int8 layers, size, speed", "left", 65))


def _int8_cell(rec: dict | None) -> str:
    """How much of an int8 file is int8 and what it buys against fp32: "21/21, 0.25x, 2.3x" (the
    record `exporters.int8.ratios` writes; "-" for other precisions, "?" where not measured)."""
    if not rec:
        return "-"
    layers = f"{rec['quantized']}/{rec['total']}" if rec.get("total") else "?"
    size = "?" if rec.get("size_ratio") is None else f"{rec['size_ratio']:.2f}x"
    speed = "?" if rec.get("speedup") is None else f"{rec['speedup']:.1f}x"
    warn = "" if rec.get("int8_real", True) else " [yellow](neither smaller nor faster)[/]"
    return f"{layers}, {size}, {speed}{warn}"


def export_table(con, result, wide: bool = False) -> None:
    """One row per exported file with its verification, fitted to the console (`wide`: every
    column), then why a file was not verified, what was not produced and what failed."""
    rows, unverified = [], []
    for a in result.artifacts:
        v = a.verification or {}
        verified = ("[green]yes[/]" if a.verified else "[red]NO[/]") if a.verified is not None else "skipped"
        if v.get("max_abs") is None and v.get("reason"):  # no runtime here could run it: say why below
            verified = "[yellow]not run[/]"
            unverified.append(f"[yellow]not verified:[/] {_esc(a.file)}: {_esc(v['reason'])}")
        size = f"{(a.size + sum(c['size'] for c in a.companions)) / 1e6:.1f} MB"
        top1 = "-" if v.get("top1_agreement") is None else f"{v['top1_agreement']:.0%}"
        rows.append([_esc(a.file), a.format, a.precision, size, verified,
                     "-" if v.get("max_abs") is None else f"{v['max_abs']:.1e}", top1,
                     _int8_cell(a.int8 if a.precision == "int8" else None)])
    con.print(fitted_table(f"exported to {_esc(result.out_dir)} in {result.seconds:.1f} s", list(EXPORT_TABLE), rows,
                           None if wide else con.width), crop=False)
    for line in unverified:
        con.print(line, highlight=False)
    for note in result.skipped:
        con.print(f"[yellow]not produced:[/] {note}")
    from rich.markup import escape

    for f in result.failed:  # reasons quote library messages, which may hold [brackets]
        con.print(f"[red]failed ({f['stage']}):[/] {escape(f['file'])}: {escape(f['reason'])}", highlight=False)
    for note in result.notes:
        con.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    con.print(f"manifest: {result.out_dir / 'manifest.json'}")


def predict_table(con, result) -> None:
    """One row per image: the top-1 label, its probability and the next labels."""
    from rich.table import Table

    table = Table(title=f"{result.model}")
    table.add_column("image", overflow="fold")  # full paths: they are what the user looks for
    for col in ("top-1", "prob", "next"):
        table.add_column(col)
    for r in result.results:
        best, rest = r["top"][0], r["top"][1:]
        table.add_row(r["image"], best["label"], f"{best['prob']:.3f}",
                      ", ".join(f"{t['label']} {t['prob']:.2f}" for t in rest))
    con.print(table)


# ---- archs ----------------------------------------------------------------------------------------
ARCHS_TABLE = (("arch", "left", FILE), ("params", "right", 90), ("GFLOPs", "right", 85), ("input", "left", 60),
               ("ImageNet cached", "left", 70), ("preprocess", "left", 40), ("head", "left", 30))


def archs_table(con, rows: list[dict], wide: bool = False) -> None:
    """The architecture registry: one row per arch (see `tlexport.tables.archs.describe`), fitted
    to the console (`wide`: every column; --json has them all)."""
    cells = []
    for r in rows:
        pre = r["preprocess"]
        size = f">= {r['min_size']} px" + (f", multiple of {r['size_multiple']}" if r["size_multiple"] > 1 else "")
        cells.append([r["arch"], f"{r['params_m']:.1f} M", "-" if r["gflops"] is None else f"{r['gflops']:.2f}", size,
                      "[green]yes[/]" if r["cached"] else "no", f"{pre['resize']}/{pre['crop']} {pre['interpolation']}",
                      _esc(r["head"])])
    con.print(fitted_table("tlexport archs (--arch NAME)", list(ARCHS_TABLE), cells, None if wide else con.width),
              crop=False)
    con.print("GFLOPs: torchvision's count (multiply-adds) per image at the weights' crop size. "
              "Weights not cached: --weights imagenet downloads them (or put the file in "
              "$TORCH_HOME/hub/checkpoints).")
