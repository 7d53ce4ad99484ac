"""Per-layer quantization sensitivity, and PTQ that keeps the costly layers in float.

Method: leave one out. The model is quantized whole (PTQ on the calibration set), then once per
layer with only that layer left in float (the quantizer's `exclude`); a layer's cost is

    cost_pt = accuracy(all quantized but this layer) - accuracy(all quantized)    (val, points)

We measure this rather than "quantize only this layer" because it is exactly the decision being
made: what keeping this one layer in float buys back inside the INT8 model that ships, with the
other layers' quantization errors (which compound through the network) in place. Quantizing one
layer alone in a float network measures that layer's error in a setting that never deploys and
misses the compounding. Cost: one PTQ per layer plus one, each calibrated on the calibration set
only, and one val pass each (no training).

On a small val set many layers tie (one image is 1/N of the accuracy), so each layer also gets
`output_error`: how far the quantized model's logits move from the float model's (relative mean
squared error on val) with that layer in float, lower is better; the ranking breaks ties on how
much leaving the layer float reduces it.

Layers whose cost exceeds a threshold are kept in float (`choose_exclusions`). The costs are
measured one at a time and are not exactly additive, so `ptq_with_sensitivity` measures the final
model with all its exclusions again, and times each exclusion on the target's backend
(edgekd/quantizers/exclusion_latency.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from edgekd.data import Split
from edgekd.errors import UserError
from edgekd.measure import progress
from edgekd.quantizers.exclude import check_exclude, weighted_layers
from edgekd.target import Target
from edgekd.training import evaluate_accuracy, predict_logits

log = logging.getLogger(__name__)

METHOD = ("leave-one-out: accuracy of the INT8 model with only this layer in float minus accuracy of the "
          "all-INT8 model, PTQ calibrated on the calibration set, torch fake-quantized model on the val split")


@dataclass
class LayerSensitivity:
    layer: str  # torch module name
    accuracy: float  # val accuracy of the INT8 model with this layer alone in float, [0, 1]
    cost_pt: float  # accuracy points that quantizing this layer costs: accuracy - all-INT8 accuracy
    output_error: float  # relative MSE of the logits vs the float model, with this layer in float


@dataclass
class _Baseline:
    """The all-INT8 model, kept so that PTQ is not run twice for it."""

    model: nn.Module
    accuracy: float
    output_error: float


def layer_sensitivity(
    model: nn.Module,
    quantizer: ModuleType,
    calibration_x: torch.Tensor,
    val_split: Split,
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 64,
) -> list[LayerSensitivity]:
    """The cost of quantizing each layer (default: every conv and linear module), most costly
    first (module doc: leave-one-out). `quantizer` is an edgekd quantizer module
    (`prepare_int8(model, calibration_x, *, batch_size, exclude)`)."""
    return _sensitivities(model, quantizer, calibration_x, val_split, layers, batch_size)[0]


def _sensitivities(model, quantizer, calibration_x, val_split, layers, batch_size):
    model = model.eval()
    layers = check_exclude(model, layers) if layers is not None else weighted_layers(model)
    if not layers:
        raise UserError("the model has no convolution or linear layer to quantize; pass `layers` by name")
    reference = predict_logits(model, val_split)
    quantized = quantizer.prepare_int8(model, calibration_x, batch_size=batch_size)
    baseline = _Baseline(quantized, evaluate_accuracy(quantized, val_split),
                         _output_error(quantized, val_split, reference))
    results = []
    for layer in progress(layers, desc="sensitivity layers", total=len(layers)):
        kept = quantizer.prepare_int8(model, calibration_x, batch_size=batch_size, exclude=[layer])
        accuracy = evaluate_accuracy(kept, val_split)
        results.append(LayerSensitivity(
            layer=layer, accuracy=accuracy, cost_pt=100.0 * (accuracy - baseline.accuracy),
            output_error=_output_error(kept, val_split, reference)))
        log.debug("sensitivity: %s float: val accuracy %.4f (%+.2f pt), output error %.3g", layer, accuracy,
                  results[-1].cost_pt, results[-1].output_error)
    # Most costly first; ties (common on small val sets) by how much float here cuts the logit error.
    results.sort(key=lambda s: (-s.cost_pt, s.output_error))
    return results, baseline


def _output_error(model: nn.Module, x, reference: torch.Tensor) -> float:
    logits = predict_logits(model, x)
    return float(((logits - reference) ** 2).mean() / (reference**2).mean().clamp_min(1e-12))


def choose_exclusions(sensitivities: Sequence[LayerSensitivity], threshold_pt: float) -> list[str]:
    """Layers whose quantization costs more than `threshold_pt` accuracy points, most costly first."""
    if threshold_pt < 0:
        raise UserError(f"sensitivity threshold must be >= 0 accuracy points, got {threshold_pt}")
    ranked = sorted(sensitivities, key=lambda s: (-s.cost_pt, s.output_error))
    return [s.layer for s in ranked if s.cost_pt > threshold_pt]


def ptq_with_sensitivity(
    model: nn.Module,
    calibration_x: torch.Tensor,
    val_split: Split,
    *,
    target: Target,
    threshold_pt: float,
    layers: Sequence[str] | None = None,
    batch_size: int = 64,
    rounds: int = 3,
    workdir: Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """PTQ with the target's quantizer, keeping in float every layer whose quantization costs
    more than `threshold_pt` val accuracy points; returns the quantized model and a report
    (plain JSON): each layer's sensitivity, the exclusions, float / all-INT8 / final accuracy,
    and the latency each exclusion costs on the target's backend, measured side by side
    (`rounds` alternating rounds with the target's bench protocol) or labelled "not measured
    (reason)" where the backend cannot run here."""
    from edgekd.quantizers import get_quantizer
    from edgekd.quantizers.exclusion_latency import measure_exclusion_latency

    if threshold_pt < 0:
        raise UserError(f"sensitivity threshold must be >= 0 accuracy points, got {threshold_pt}")
    start = time.perf_counter()
    quantizer = get_quantizer(target.quantizer)
    model = model.eval()
    float_accuracy = evaluate_accuracy(model, val_split)
    log.info("ptq: sensitivity of %s layers on %d calibration / %d val samples (float val accuracy %.4f)",
             len(layers) if layers is not None else "all weighted", len(calibration_x), len(val_split), float_accuracy)
    sensitivities, baseline = _sensitivities(model, quantizer, calibration_x, val_split, layers, batch_size)
    exclusions = choose_exclusions(sensitivities, threshold_pt)
    if exclusions:
        final = quantizer.prepare_int8(model, calibration_x, batch_size=batch_size, exclude=exclusions)
        final_accuracy = evaluate_accuracy(final, val_split)
    else:
        final, final_accuracy = baseline.model, baseline.accuracy
    latency = measure_exclusion_latency(
        model, quantizer, calibration_x, exclusions, target=target, quantized=baseline.model, final=final,
        val_split=val_split, batch_size=batch_size, rounds=rounds, workdir=workdir)
    report = {
        "method": METHOD,
        "quantizer": f"{target.quantizer} {quantizer.version()}",
        "threshold_pt": threshold_pt,
        "calibration_samples": len(calibration_x),
        "val_samples": len(val_split),
        "float_accuracy": float_accuracy,
        "int8_accuracy": baseline.accuracy,
        "int8_output_error": baseline.output_error,
        "final_accuracy": final_accuracy,
        "accuracy_source": "torch fake-quantized model on the val split",
        "layers": [{**asdict(s), "excluded": s.layer in exclusions} for s in sensitivities],
        "excluded": exclusions,
        "latency": latency,
        "seconds": round(time.perf_counter() - start, 1),
    }
    log.info("ptq: %d of %d layers kept in float (cost > %.2f pt): %s; val accuracy float %.4f, all-INT8 %.4f, "
             "final %.4f; latency %s (%.1f s)", len(exclusions), len(sensitivities), threshold_pt,
             ", ".join(exclusions) or "none", float_accuracy, baseline.accuracy, final_accuracy,
             _latency_summary(latency), report["seconds"])
    return final, report


def _latency_summary(latency: dict[str, Any]) -> str:
    if latency["status"] != "measured":
        return latency["status"]
    ms = latency["p50_ms"]
    final = f", final {ms['int8_final']:.4f}" if "int8_final" in ms else ""
    return f"p50 fp32 {ms['float']:.4f} ms, all-INT8 {ms['int8']:.4f} ms{final}"
