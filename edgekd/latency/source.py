"""A latency value and where it comes from. A product team must never read a prediction as a
measurement, so no latency travels without its source, and every place that shows one shows the
source beside it (`str(latency)`: "0.1234 ms measured").

The four sources:
- measured: timed on the target's runtime (here, or on the device over SSH);
- predicted (table): the sum of the target's measured per-block latency table (`edgekd lut`),
  calibrated on its measured records (edgekd/latency/predictor.py);
- predicted (analytical): from the device's published peak figures, for a device that is not
  attached (edgekd/latency/analytical.py);
- extrapolated: a table prediction for which some blocks were missing from the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEASURED = "measured"
TABLE = "predicted (table)"
ANALYTICAL = "predicted (analytical)"
EXTRAPOLATED = "extrapolated"
SOURCES = (MEASURED, TABLE, ANALYTICAL, EXTRAPOLATED)


@dataclass(frozen=True)
class Latency:
    """Batch-1 latency in ms (the p50 where it was timed) and its source. `detail` says how a
    prediction was made (e.g. the calibration), for people; p90/p99 exist only when timed."""

    ms: float
    source: str
    detail: str = ""
    p90_ms: float | None = None
    p99_ms: float | None = None
    device: str = ""  # which device measured it ("local", or the ssh:// device of a pool); "" for a prediction

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"latency source {self.source!r} is not one of {SOURCES}")
        if not (math.isfinite(self.ms) and self.ms > 0):
            raise ValueError(f"a latency must be a positive number of ms, got {self.ms!r}")

    @property
    def measured(self) -> bool:
        return self.source == MEASURED

    def __str__(self) -> str:
        return f"{format_ms(self.ms)} ms {self.source}"


def format_ms(ms: float) -> str:
    """4 decimals, the precision timings on these devices carry; a value that would print as
    0.0000 gets 3 significant digits instead."""
    return f"{ms:.4f}" if abs(ms) >= 0.001 or ms == 0 else f"{ms:.3g}"


def combined_source(*latencies: Latency) -> str:
    """The source of a number computed from several latencies (a speed-up, a budget check): measured
    only when all of them are; else the least certain one's."""
    order = {source: rank for rank, source in enumerate(SOURCES)}
    return max((latency.source for latency in latencies), key=order.__getitem__)
