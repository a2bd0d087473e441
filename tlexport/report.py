"""Rendering report objects: rich terminal tables, JSON files and Markdown; environment capture.

Organised by report type: shared helpers first, then one section per report (parity here;
bench adds its own section). Library code builds report dataclasses; only this module and
cli.py turn them into text. Importing it is cheap: rich is imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path

# ---- shared ------------------------------------------------------------------------------------


def environment(threads: int | None = None) -> dict:
    """The machine and library versions that produced a report (best effort, never raises)."""
    try:
        from .envinfo import environment as capture

        return capture(threads=threads)
    except Exception as e:  # noqa: BLE001 - a report without its environment beats no report
        import platform
        import sys

        return {"python": sys.version.split()[0], "platform": platform.platform(),
                "error": f"environment capture failed: {type(e).__name__}"}


def json_safe(obj):
    """Recursively replace NaN/Inf (not valid JSON) by None and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
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


def write_json_report(path: Path | str, report) -> Path:
    """Write a report (an object with .to_dict() or a dict) as JSON, atomically.

    Returns:
        The path written.
    """
    from .fileio import write_json

    path = Path(path).expanduser()
    data = report.to_dict() if hasattr(report, "to_dict") else report
    write_json(path, json_safe(data))
    return path


def write_text_report(path: Path | str, text: str) -> Path:
    """Write a Markdown (or any text) report atomically."""
    from .fileio import write_text

    path = Path(path).expanduser()
    write_text(path, text)
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


# ---- parity ------------------------------------------------------------------------------------
PARITY_COLUMNS = ("runtime", "precision", "device", "max abs", "mean abs", "max rel", "cos min",
                  "top-1", "top-5", "acc", "Δacc", "batch", "meta", "result")


def _parity_cells(r) -> list[tuple[str, bool]]:
    """Cells of one parity row as (text, failing) pairs; failing cells are marked red."""
    fail_text = " ".join(r.failures)
    tol_fail = r.within_tolerance is False and "outside atol" in fail_text
    top1_fail = "top-1 agreement" in fail_text
    return [
        (r.runtime, False), (r.precision, False), (r.device, False),
        (fmt_num(r.max_abs), tol_fail), (fmt_num(r.mean_abs), False), (fmt_num(r.max_rel), tol_fail),
        ("-" if r.cosine_min is None else f"{r.cosine_min:.6f}", r.finite is False),
        (fmt_pct(r.top1_agreement, 2), top1_fail), (fmt_num(r.top5_overlap), False),
        (fmt_pct(r.accuracy), False), (fmt_delta(r.accuracy_delta), "accuracy" in fail_text),
        (_yes_no(r.batch_independent), r.batch_independent is False),
        (_yes_no(r.metadata_ok), r.metadata_ok is False),
        ("PASS" if r.passed else "FAIL", not r.passed),
    ]


def _yes_no(value) -> str:
    return "-" if value is None else ("ok" if value else "NO")


def parity_table(report):
    """A rich Table: one row per runtime x precision x device; failing cells red, skipped dim."""
    from rich.table import Table

    title = (f"Parity vs {report.reference} on {report.images} images ({report.source}); "
             f"fp32 atol={report.atol:g} rtol={report.rtol:g}")
    table = Table(title=title, title_justify="left")
    for col in PARITY_COLUMNS:
        table.add_column(col, justify="left" if col in ("runtime", "precision", "device") else "right")
    for r in report.results:
        if r.skipped_reason is not None:
            # Reasons are long: they are listed under the table, not squeezed into a cell.
            table.add_row(r.runtime, r.precision, r.device, *["-"] * (len(PARITY_COLUMNS) - 4),
                          "skipped", style="dim")
            continue
        cells = [f"[bold red]{_esc(t)}[/]" if bad else (f"[green]{t}[/]" if t == "PASS" else _esc(t))
                 for t, bad in _parity_cells(r)]
        table.add_row(*cells)
    return table


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def render_parity(report, console, max_flips: int = 20) -> None:
    """Print the parity table, flipped images, failures, notes and a final PASS/FAIL line."""
    console.print(parity_table(report))
    if report.reference_accuracy is not None:
        console.print(f"Reference accuracy: {report.reference_accuracy:.2f}%")
    for r in report.compared:
        if r.flips:
            console.print(f"[bold]{r.runtime}/{r.precision}/{r.device}[/]: top-1 flips on "
                          f"{len(r.flips)} image(s):")
            for f in r.flips[:max_flips]:
                console.print(f"  {_esc(f['image'])}: reference {_esc(f['reference'])} -> "
                              f"{_esc(f['runtime'])} (reference margin {f['reference_margin']:.3g})")
            if len(r.flips) > max_flips:
                console.print(f"  ... and {len(r.flips) - max_flips} more (see --json)")
    for r in report.compared:
        for reason in r.failures:
            console.print(f"[red]FAIL[/] {r.runtime}/{r.precision}/{r.device}: {_esc(reason)}")
    for r in report.skipped:
        console.print(f"[dim]skipped {r.runtime}/{r.precision}/{r.device}: {_esc(r.skipped_reason)}[/]")
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
            row = [r.runtime, r.precision, r.device, f"skipped: {r.skipped_reason}"]
            row += [""] * (len(PARITY_COLUMNS) - len(row))
        else:
            row = [f"**{t}**" if bad else t for t, bad in _parity_cells(r)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    failures = [f"- {r.runtime}/{r.precision}/{r.device}: {f}" for r in report.compared for f in r.failures]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines) + "\n"
