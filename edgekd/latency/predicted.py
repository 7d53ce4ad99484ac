"""The latency edgekd predicts for a device it cannot run here: the analytical estimate from the
device's published peaks (edgekd/latency/analytical.py), scaled by the target's measured records
when it has some. Every value carries a label that starts with "predicted"."""

from __future__ import annotations

import torch

from edgekd.latency.analytical import (
    calibrated_factor,
    predict_latency_ms,
    required_peaks,
)
from edgekd.latency.source import ANALYTICAL, Latency
from edgekd.target import Target, baseline_precision, why_not_measurable


def predicted_latency(target: Target, model: torch.nn.Module, input_shape: tuple[int, ...],
                      precision: str) -> Latency:
    """Batch-1 latency from the analytical estimate (edgekd/latency/analytical.py: the device's
    published peaks), scaled by the target's measured records when there are any."""
    estimate = predict_latency_ms(model, tuple(input_shape), target, precision)
    factor = records_factor(target, tuple(input_shape), precision)
    # The peaks' source is recorded once, in the bench conditions and the report.
    if factor is None:
        return Latency(estimate.total_ms, ANALYTICAL, detail="from the device's published peaks")
    scale, count = factor
    return Latency(estimate.total_ms * scale, ANALYTICAL,
                   detail=f"from the device's published peaks, x {scale:.3g} from {count} measured records")


_FACTORS: dict[tuple, tuple[float, int] | None] = {}


def records_factor(target: Target, input_shape: tuple[int, ...], precision: str) -> tuple[float, int] | None:
    """Computed once per process and key: a search predicts thousands of candidates."""
    key = (target.name, input_shape, precision)
    if key not in _FACTORS:
        _FACTORS[key] = calibrated_factor(target.name, input_shape, precision, target=target)
    return _FACTORS[key]


def check_predictable(target: Target) -> None:
    """Where nothing can be measured, fail before any work if the target file lacks the peak
    figures the prediction needs."""
    if why_not_measurable(target) is None:
        return
    for precision in (target.precision, baseline_precision(target)):
        required_peaks(target, precision)  # a UserError naming the file and the keys to fill
