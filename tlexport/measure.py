"""What else the machine is doing while we time something, and how much memory we used.

Linux /proc only (other systems get None and no flag). Stdlib only; nothing above it is imported.

- Competing load: CPU time all processes spent (/proc/stat) minus this process's own (all its
  threads, /proc/self/stat) and its live descendants' (a browser it drives), per second of wall
  time = cores used by *other* work. On 2 cores one
  busy neighbour makes OpenMP code many times slower (threads wait on each other), so a result
  measured beside more than `NOISE_CORES` of other work is flagged noisy.
- Peak memory: VmHWM (the resident high-water mark) is reset to the current RSS by writing "5"
  to /proc/self/clear_refs, so `PeakRss` measures the peak of one stretch of work in this process
  as peak minus the RSS it started from. Freed memory that the allocator keeps can hide part of
  a later runtime's use; a fresh process per runtime would not, at the price of reloading.
"""

from __future__ import annotations

import os
import time

NOISE_CORES = 0.25  # other processes using more than a quarter core on average: noisy


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process and its live descendants) or None
    off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        own = _family_ticks(os.getpid())
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, own


def _stat(pid) -> tuple[int, int]:
    """(parent pid, utime + stime of every thread) of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _family_ticks(me: int) -> int:
    """CPU ticks of process `me` and of every live process it started, at any depth: the work a
    command does in helpers (a headless browser with its renderer and GPU processes, a converter
    subprocess) is its own, not competing load. /proc/self/stat alone counts only this process
    (and children already waited for), so a browser bench counted Chromium as a busy neighbour
    and flagged every cell noisy."""
    total = _stat(me)[1]
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            parent, used = _stat(entry.name)
        except (OSError, ValueError, IndexError):  # gone since the listing, or unreadable
            continue
        children.setdefault(parent, []).append(int(entry.name))
        ticks[int(entry.name)] = used
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        total += ticks[pid]
        todo += children.get(pid, [])
    return total


class CpuLoad:
    """Cores used by other processes between `start()` and `stop()`."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._t0 = self._ticks0 = None

    def start(self) -> "CpuLoad":
        self._t0, self._ticks0 = time.perf_counter(), _cpu_ticks()
        return self

    def stop(self) -> float | None:
        ticks, wall = _cpu_ticks(), time.perf_counter() - (self._t0 or 0.0)
        if ticks is None or self._ticks0 is None or wall <= 0:
            return None
        busy = (ticks[0] - self._ticks0[0]) - (ticks[1] - self._ticks0[1])
        return max(0.0, busy / self.hz / wall)


def competing_load(seconds: float = 0.5) -> float | None:
    """Cores other processes use over `seconds` while this one sleeps."""
    probe = CpuLoad().start()
    time.sleep(seconds)
    return probe.stop()


def is_noisy(load: float | None) -> bool:
    return load is not None and load > NOISE_CORES


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class PeakRss:
    """Peak resident memory of a stretch of work in this process, in MB above where it started."""

    method = "in-process: VmHWM after resetting it via /proc/self/clear_refs, minus the RSS before"

    def start(self) -> "PeakRss":
        import gc

        # Garbage of earlier work freed during the stretch would lower RSS under its start and hide
        # part of the peak: collect it before the baseline is read.
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        self.base = _status_kb("VmRSS")
        return self

    def peak_mb(self) -> float | None:
        now = _status_kb("VmHWM" if self.resettable else "VmRSS")
        if now is None or self.base is None:
            return None
        return round(max(0, now - self.base) / 1024, 1)
