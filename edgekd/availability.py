"""Where a target's artifacts can run, and the latency edgekd predicts where they cannot.

edgekd times an artifact on the target's runtime: here (`runner: local`) or on the device over
SSH. Some targets cannot run here at all: a TensorRT engine needs TensorRT and an NVIDIA GPU, a
Core ML model needs macOS. Then the stages still do everything that can run here (export, the
Q/DQ ONNX checked in onnxruntime, CoreML conversion and validation) and use a *predicted*
latency, labelled so in every output, instead of a measured one (DESIGN.md: "On a device that is
not attached, a latency is a prediction and is labelled so everywhere it appears").
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass

import torch

from edgekd.config import Target

log = logging.getLogger(__name__)


def why_not_measurable(target: Target) -> str | None:
    """None when edgekd can time this target's artifacts; else the reason it cannot."""
    if target.runner != "local":
        return None  # the device behind the runner has the runtime (checked when it is reached)
    if target.backend == "tensorrt":
        from edgekd.backends import tensorrt_api, tensorrt_trtexec

        if tensorrt_api.trt is None and tensorrt_trtexec.find_trtexec() is None:
            return ("TensorRT is not installed here (neither the tensorrt Python package nor trtexec); "
                    "run edgekd on the device, or give it with --device ssh://user@host")
    if target.backend == "coreml" and platform.system() != "Darwin":
        return "Core ML runs models only on macOS; run edgekd on a Mac to measure"
    return None


@dataclass
class PredictedLatency:
    ms: float
    label: str  # always starts with "predicted"


def predicted_latency(target: Target, model: torch.nn.Module, input_shape: tuple[int, ...],
                      precision: str) -> PredictedLatency:
    """Batch-1 latency from the analytical estimate (edgekd/latency/analytical.py: the device's
    published peaks), scaled by the target's measured records when there are any."""
    from edgekd.latency.analytical import predict_latency_ms

    estimate = predict_latency_ms(model, tuple(input_shape), target, precision)
    factor = _records_factor(target, tuple(input_shape), precision)
    # The label stays short (it is printed beside every number); the peaks' source is recorded
    # once, in the bench conditions and the report.
    if factor is None:
        return PredictedLatency(ms=estimate.total_ms, label="predicted (analytical)")
    scale, count = factor
    return PredictedLatency(ms=estimate.total_ms * scale,
                            label=f"predicted (analytical x {scale:.3g} from {count} measured records)")


_FACTORS: dict[tuple, tuple[float, int] | None] = {}


def _records_factor(target: Target, input_shape: tuple[int, ...], precision: str) -> tuple[float, int] | None:
    """Computed once per process and key: a search predicts thousands of candidates."""
    from edgekd.latency.analytical import calibrated_factor

    key = (target.name, input_shape, precision)
    if key not in _FACTORS:
        _FACTORS[key] = calibrated_factor(target.name, input_shape, precision, target=target)
    return _FACTORS[key]


def baseline_precision(target: Target) -> str:
    """The precision the teacher and the float student are deployed at: what a team would ship
    without edgekd. fp16 where the runtime computes in fp16 anyway (TensorRT, Core ML), else fp32."""
    if target.backend in ("tensorrt", "coreml") and "fp16" in target.precisions:
        return "fp16"
    return "fp32"


def check_predictable(target: Target) -> None:
    """Where nothing can be measured, fail before any work if the target file lacks the peak
    figures the prediction needs."""
    if why_not_measurable(target) is None:
        return
    from edgekd.latency.analytical import required_peaks

    for precision in (target.precision, baseline_precision(target)):
        required_peaks(target, precision)  # a UserError naming the file and the keys to fill


def runtime_version(backend) -> str:
    """The backend runtime's version, or "not installed here" (TensorRT off a GPU host)."""
    from edgekd.errors import MissingDependencyError

    try:
        return backend.version()
    except MissingDependencyError:
        return "not installed here"
