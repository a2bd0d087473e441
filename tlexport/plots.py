"""Plots for reports (matplotlib with the headless Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path


def latency_vs_batch(report, path: Path | str, title: str | None = None) -> Path:
    """PNG of p50 latency (with p90 whiskers) and throughput against batch size, one line per
    runtime/precision/device. Failed cells are left out.

    Args:
        report: a BenchReport (or anything with `.results` of BenchResult).
        path: the PNG to write.
    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot is imported
    import matplotlib.pyplot as plt

    series: dict[str, list] = {}
    for r in report.results:
        if r.error is None and r.p50_ms is not None:
            series.setdefault(r.label, []).append(r)
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, cells in sorted(series.items()):
        cells.sort(key=lambda r: r.batch_size)
        xs = [r.batch_size for r in cells]
        p50 = [r.p50_ms for r in cells]
        upper = [max(r.p90_ms - r.p50_ms, 0.0) for r in cells]
        ax_lat.errorbar(xs, p50, yerr=[[0.0] * len(xs), upper], marker="o", capsize=3, label=label)
        ax_thr.plot(xs, [r.throughput for r in cells], marker="o", label=label)
    batches = sorted({r.batch_size for cells in series.values() for r in cells})
    for ax, ylabel in ((ax_lat, "p50 latency, ms (bar: p90)"), (ax_thr, "throughput, images/s")):
        ax.set_xscale("log", base=2)
        if batches:  # label the measured batch sizes as plain numbers, not powers of two
            ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if series:
        ax_lat.legend(fontsize=8)
    fig.suptitle(title or "tlexport bench: latency and throughput vs batch size")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)  # tmp has no .png suffix: say the format
    plt.close(fig)
    return path
