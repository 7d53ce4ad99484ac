"""How much of the CPUs other processes used while we were timing.

Latency tables and benchmarks are only as good as the quiet machine they were measured on. On a
2-core machine, even a `nice -n 19` job beside a table build made OpenVINO blocks look 2-5x
slower than they are inside a model (measured in this tree, benchmarks/README.md): OpenVINO's
threads meet at a barrier after every layer, so one thread kept waiting by a background job
stalls the inference. The scheduler does not protect timing, so we measure the disturbance.

`OtherLoad` reads the machine's busy CPU time (/proc/stat, all processes, niced ones included)
and this process's own CPU time (every thread) at the start and at each `share()`; what the
machine spent beyond this process, divided by the wall time and the core count, is the share
of the CPUs that others took. Where /proc/stat does not exist (macOS, Windows) the share is None.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# A share above this is worth a warning: timings taken that way are not the device's.
BUSY_SHARE = 0.05


def machine_busy_seconds(stat_file: Path = PROC_STAT) -> float | None:
    """CPU seconds every process has spent busy since boot (user, nice, system, irq, softirq,
    steal), or None where the kernel does not expose them."""
    try:
        fields = stat_file.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (fields[1:9] + ["0"] * 8)[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """The share of the machine's CPUs that other processes used since the last reading."""

    def __init__(self, stat_file: Path = PROC_STAT, cpus: int | None = None):
        self.stat_file = stat_file
        self.cpus = cpus or os.cpu_count() or 1
        self._mark()

    def _mark(self) -> None:
        self._busy = machine_busy_seconds(self.stat_file)
        self._own = time.process_time()
        self._wall = time.perf_counter()

    def share(self) -> float | None:
        """Others' share of all CPUs since the previous call (or creation), 0..1; None where
        unknown. Starts a new interval."""
        busy, own, wall = machine_busy_seconds(self.stat_file), time.process_time(), time.perf_counter()
        previous_busy, previous_own, previous_wall = self._busy, self._own, self._wall
        self._mark()
        if busy is None or previous_busy is None or wall <= previous_wall:
            return None
        others = (busy - previous_busy) - (own - previous_own)
        return min(max(others / ((wall - previous_wall) * self.cpus), 0.0), 1.0)
