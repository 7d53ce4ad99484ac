"""Latency functions for the latency-guided search: model -> (ms, source), on the target.

- `openvino_latency`: export the model to OpenVINO IR (INT8 through NNCF PTQ when asked) and time
  it on this CPU, batch 1: "measured".
- `predicted_latency_fn`: edgekd.latency.predicted's estimate for a target that is not attached,
  labelled as the predictor labels it ("predicted (analytical)", or calibrated on records).
- `latency_fn_for_target`: whichever of the two the target allows.

A latency function may time the model at another input than the one it was pruned on (`input_shape`):
channel counts do not depend on the input size, so a model trained at 28x28 can be timed at the
3x224x224 it would be deployed at (`adapt` turns one into the other, e.g. widening the stem).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from edgekd.prune.latency_guided import LatencyFn
from edgekd.target import Target, why_not_measurable

log = logging.getLogger(__name__)


def openvino_latency(
    input_shape: tuple[int, ...],
    *,
    precision: str = "fp32",
    warmup: int = 10,
    runs: int = 50,
    threads: int | None = None,
    calibration: torch.Tensor | None = None,
    adapt: Callable[[nn.Module], nn.Module] | None = None,
    statistic: str = "p50",
) -> LatencyFn:
    """Batch-1 latency of the model's OpenVINO IR on this machine at `input_shape` (C, H, W): the
    p50 of `runs` timed calls, or with `statistic` "min" their fastest, which is steadier for
    comparing candidates on a machine that other jobs share (the slow calls are the ones the
    scheduler interrupted; the fastest is the model's own cost).

    INT8 goes through NNCF PTQ (the x86-cpu target's quantizer) of the exported IR, calibrated on
    `calibration` (default: 4 random images; latency does not depend on the calibration data)."""
    from edgekd.backends import get_backend
    from edgekd.quantizers import get_quantizer

    openvino = get_backend("openvino")
    if precision not in openvino.PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {openvino.PRECISIONS}, got {precision!r}")
    if statistic not in ("p50", "min"):
        raise ValueError(f"statistic must be 'p50' or 'min', got {statistic!r}")
    if calibration is None:
        calibration = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))
    workdir = Path(tempfile.mkdtemp(prefix="edgekd-prune-latency-"))

    def measure(model: nn.Module) -> tuple[float, str]:
        model = adapt(model) if adapt is not None else model
        path = openvino.export(model.eval(), calibration[:1], workdir / "candidate.xml", metadata={})
        if precision == "int8":
            path = get_quantizer("nncf").quantize_ir(path, workdir / "candidate-int8.xml", calibration)
        stats = openvino.benchmark(path, warmup=warmup, runs=runs, threads=threads)
        return (stats.p50_ms if statistic == "p50" else stats.min_ms), "measured"

    return measure


def predicted_latency_fn(target: Target, input_shape: tuple[int, ...], precision: str,
                         adapt: Callable[[nn.Module], nn.Module] | None = None) -> LatencyFn:
    """The target's predicted batch-1 latency (edgekd.latency.predicted), with its label."""
    from edgekd.latency.predicted import predicted_latency

    def predict(model: nn.Module) -> tuple[float, str]:
        model = adapt(model) if adapt is not None else model
        estimate = predicted_latency(target, model, tuple(input_shape), precision)
        return estimate.ms, estimate.source

    return predict


def latency_fn_for_target(target: Target, input_shape: tuple[int, ...], precision: str, *,
                          warmup: int = 10, runs: int = 50, threads: int | None = None,
                          adapt: Callable[[nn.Module], nn.Module] | None = None) -> LatencyFn:
    """Measured where edgekd can time the target here (OpenVINO on this CPU), else predicted."""
    why = why_not_measurable(target)
    if why is None and target.backend == "openvino" and target.runner == "local":
        return openvino_latency(input_shape, precision=precision, warmup=warmup, runs=runs, threads=threads,
                                adapt=adapt)
    log.info("prune: latency of %s candidates is predicted, not measured (%s)", target.name,
             why or f"backend {target.backend} via runner {target.runner}")
    return predicted_latency_fn(target, input_shape, precision, adapt=adapt)
