"""The latency of a torch model on a target: exported with the target's backend (quantized with
its quantizer for INT8) and timed where the target's runner says, or, for a device that cannot
run here, predicted from its published peaks. The search times its candidates with this."""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.backends import get_backend
from edgekd.latency.lut import quiet_exports
from edgekd.latency.predicted import predicted_latency
from edgekd.latency.source import MEASURED, Latency
from edgekd.quantizers import get_quantizer
from edgekd.remote import benchmark_on_target
from edgekd.target import Target, why_not_measurable


def measure_on_target(target: Target, model: torch.nn.Module, example_input: torch.Tensor, precision: str, *,
                      workdir: Path, name: str, warmup: int, runs: int, threads: int | None,
                      calibration: torch.Tensor | None = None) -> Latency:
    """Export `model` (INT8: the target quantizer's PTQ on `calibration`) into `workdir` and time
    batch-1 inference on the target."""
    backend = get_backend(target.backend)
    quantizer = None
    if precision == "int8":
        quantizer = get_quantizer(target.quantizer)
        model = quantizer.prepare_int8(model, calibration if calibration is not None else example_input)
    workdir.mkdir(parents=True, exist_ok=True)
    with quiet_exports():  # a search times dozens of candidates; their export lines would bury the rest
        path = backend.write_for_timing(model, example_input[:1], workdir / f"{name}-{precision}{backend.SUFFIX}",
                                        precision=precision, quantizer=quantizer)
    stats = benchmark_on_target(target, path, backend, warmup, runs, threads)
    return Latency(stats.p50_ms, MEASURED, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms,
                   device=getattr(stats, "host", None) or target.runner)


def latency_on_target(target: Target, model: torch.nn.Module, example_input: torch.Tensor, precision: str, *,
                      workdir: Path, name: str, warmup: int, runs: int, threads: int | None,
                      calibration: torch.Tensor | None = None) -> Latency:
    """Measured on the target when edgekd can run it, else predicted from the device's peaks."""
    if why_not_measurable(target) is None:
        return measure_on_target(target, model, example_input, precision, workdir=workdir, name=name, warmup=warmup,
                                 runs=runs, threads=threads, calibration=calibration)
    return predicted_latency(target, model, tuple(example_input.shape[1:]), precision)
