"""Latency measurement and progress bars, shared by every backend and the training loops.

No backend imports here: backends hand us a zero-argument callable and we time it.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

T = TypeVar("T")

_NS_PER_MS = 1e6


@dataclass
class LatencyStats:
    """Per-call latency of `runs` timed calls, each processing `batch` samples."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    batch: int
    # Every timed call, in call order: the report draws its latency histogram from these. Kept out
    # of to_dict (its keys are a stable interface); see timings_summary.
    samples_ms: list[float] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        # Short keys because the report header already says the unit is ms.
        return {
            "p50": round(self.p50_ms, 4),
            "p90": round(self.p90_ms, 4),
            "p99": round(self.p99_ms, 4),
            "mean": round(self.mean_ms, 4),
            "min": round(self.min_ms, 4),
            "runs": self.runs,
            "warmup": self.warmup,
            "batch": self.batch,
        }


def timings_summary(samples_ms: list[float]) -> dict:
    """What the raw timings say beyond the percentiles: their count, spread and the slowest call,
    so that a report can show how noisy a measurement was without carrying every sample."""
    values = np.asarray(samples_ms, dtype=float)
    if values.size == 0:
        raise ValueError("timings_summary needs at least one sample")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "count": int(values.size),
        "p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4),
        "mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4),
        "min": round(float(values.min()), 4), "max": round(float(values.max()), 4),
    }


_progress_shown = True


def hide_progress_bars() -> None:
    """No bars from this process (torchrun's ranks but 0 share its terminal and train alike)."""
    global _progress_shown
    _progress_shown = False


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterable[T]:
    """A progress bar that shows only on a terminal (disable=None) and vanishes when done."""
    return tqdm(iterable, desc=desc, total=total, disable=None if _progress_shown else True, leave=False)


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int,
    runs: int,
    batch: int = 1,
    desc: str | None = None,
) -> LatencyStats:
    """Call `fn` `warmup` times untimed, then `runs` times timed; return latency percentiles."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")

    # Warm-up absorbs one-off costs (lazy allocation, caches, thread-pool start-up).
    for _ in range(warmup):
        fn()

    durations_ns = np.empty(runs, dtype=np.int64)
    indices: Iterable[int] = range(runs)
    if desc is not None:
        indices = progress(indices, desc=desc, total=runs)
    for i in indices:
        start_ns = time.perf_counter_ns()
        fn()
        durations_ns[i] = time.perf_counter_ns() - start_ns

    durations_ms = durations_ns / _NS_PER_MS
    p50_ms, p90_ms, p99_ms = np.percentile(durations_ms, [50, 90, 99])
    stats = LatencyStats(
        p50_ms=float(p50_ms),
        p90_ms=float(p90_ms),
        p99_ms=float(p99_ms),
        mean_ms=float(durations_ms.mean()),
        min_ms=float(durations_ms.min()),
        runs=runs,
        warmup=warmup,
        batch=batch,
        samples_ms=[round(float(v), 6) for v in durations_ms],
    )
    log.debug("timed %s: %s", desc or "calls", stats.to_dict())
    return stats


def cpu_name() -> str:
    """The CPU, or the board where the kernel names one (Jetson), for the measurement record; on
    x86 with its core count and vector extensions ("AMD EPYC (2 cores, AVX-512 VNNI)"), since
    machines sold under one name differ in exactly what decides INT8 and fp32 latency."""
    name = _cpu_model()
    features = _x86_features()
    return f"{name} ({os.cpu_count()} cores, {features})" if features else name


def _x86_features() -> str:
    """The vector extensions that change CPU inference latency most, from /proc/cpuinfo's flags:
    AMX, AVX-512 VNNI, AVX-512, AVX2 only. Empty off x86 Linux."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return ""
    has = set(flags)
    found = [label for flag, label in (("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI")) if flag in has]
    if not found and "avx512f" in has:
        found = ["AVX-512, no VNNI"]
    if not found and "avx2" in has:
        found = ["AVX2 only"]
    return ", ".join(found)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:  # ARM boards: /proc/cpuinfo has no model name, the device tree names the board
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        pass
    if sys.platform == "darwin":
        result = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    return platform.processor() or platform.machine()
