"""What else the machine is doing while we time something, and how much memory we used.

Linux /proc only (other systems get None and no flag). Stdlib only; nothing above it is imported.

- Competing load: CPU time all processes spent (/proc/stat) minus this process's own (all its
  threads, /proc/self/stat), per second of wall time = cores used by *other* work. On 2 cores one
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
    """(busy ticks of the whole machine, ticks of this process) or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, int(own[11]) + int(own[12])  # utime + stime of every thread


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
