"""Predicted latency on a device that is not attached, from its published peaks (roofline model).

Each layer of one batch-1 forward pass (found with forward hooks, as
edgekd.models.profile.count_macs finds convolutions and linears) costs

    ms = max(ops / (peak_ops x COMPUTE_EFFICIENCY), bytes / bandwidth) + LAYER_OVERHEAD_MS

where ops = 2 x MACs (pools: one op per window element), bytes = weights + input + output at the
precision's element size (int8: 1, fp16: 2, fp32: 4 bytes), peak_ops the target's dense peak for
that precision (targets/<name>.yaml `peaks:`) and bandwidth its DRAM bandwidth. The model
assumes what every edge compiler does (TensorRT, OpenVINO, Core ML): batch norm and activations
are fused into the convolution before them and cost nothing; a residual add is fused into the
convolution that produces one operand, so it adds only the read of its other operand and no
fixed cost; an elementwise multiply (squeeze-excite) is a kernel of its own. Caches are ignored
(every layer reads and writes DRAM): an upper bound on traffic, against the published peak
bandwidth, a lower bound on time. Functional matmuls (attention) are not counted.

The two constants are NOT fitted on the anchor they are checked against (MLPerf Inference v3.1
ResNet-50 single-stream on Jetson AGX Orin, 0.64 ms). They are the least-squares fit (relative
error) of this model, with the published dense GPU peaks of each module, to three other MLPerf
Inference v3.1 closed-division single-stream results by NVIDIA (TensorRT 8.5.2, JetPack 5.1.1,
GPU only: the DLAs are used in Offline only, per the submission's system notes), p90 latency:

- RetinaNet 800x800 on Jetson AGX Orin 64GB: 11.672 ms  (results/Orin_TRT/retinanet/SingleStream)
- RetinaNet 800x800 on Jetson Orin NX 16GB: 28.626 ms   (results/Orin_NX_TRT/retinanet/SingleStream)
- ResNet-50 224x224 on Jetson Orin NX 16GB: 1.082 ms    (results/Orin_NX_TRT/resnet50/SingleStream)

(github.com/mlcommons/inference_results_v3.1, closed/NVIDIA). RetinaNet is large and compute
bound, so it sets the efficiency; ResNet-50 on the smaller module sets the per-layer cost. The
fit, its residuals and the anchor check are reproduced by `benchmarks/mlperf_anchor.py`
(results in benchmarks/results/mlperf-anchor/). The constants describe TensorRT on an Ampere
GPU; for other engines (Core ML's Neural Engine) they are a first guess until the target's
latency records calibrate them (`calibrated_factor`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.target import TARGETS_DIR, DevicePeaks, Target

log = logging.getLogger(__name__)

# Fitted as the module docstring says: benchmarks/mlperf_anchor.py prints the fit (0.491, 6.63 us).
COMPUTE_EFFICIENCY = 0.49
LAYER_OVERHEAD_MS = 0.0066

BYTES_PER_ELEMENT = {"int8": 1, "fp16": 2, "fp32": 4}
PEAK_KEY = {"int8": "int8_tops", "fp16": "fp16_tflops", "fp32": "fp32_tflops"}

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass(frozen=True)
class LayerWork:
    """What one layer does in a forward pass, independent of the device and the precision."""

    name: str
    kind: str  # conv, linear, pool, add, mul
    ops: int  # arithmetic operations (a MAC is two)
    elements: int  # tensor elements read and written: weights + inputs + output
    fixed_cost: bool  # False when the layer runs fused into another kernel


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    kind: str
    ops: int
    bytes: int
    compute_ms: float
    memory_ms: float
    overhead_ms: float

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms) + self.overhead_ms

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


@dataclass(frozen=True)
class AnalyticalEstimate:
    """A predicted batch-1 latency: never a measurement, and `label` says so wherever it is shown."""

    total_ms: float
    target: str
    precision: str
    source: str
    efficiency: float
    layer_overhead_ms: float
    layers: list[LayerEstimate] = field(repr=False)

    @property
    def label(self) -> str:
        return f"predicted (analytical: {self.source})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        data["layers"] = [{**asdict(layer), "ms": layer.ms, "bound": layer.bound} for layer in self.layers]
        return data


def predict_latency_ms(model: nn.Module, input_shape: tuple[int, ...], target: Target, precision: str | None = None,
                       *, efficiency: float = COMPUTE_EFFICIENCY, layer_overhead_ms: float = LAYER_OVERHEAD_MS,
                       ) -> AnalyticalEstimate:
    """Predicted batch-1 latency of `model` at `input_shape` ([C, H, W]) on `target` at
    `precision` (default: the target's), from the target's published peaks. Raises UserError
    when the peaks it needs are null in the target file."""
    precision = precision or target.precision
    peak_tops, bandwidth_gbs = required_peaks(target, precision)
    return estimate(profile_layers(model, input_shape), target.name, precision, peak_tops, bandwidth_gbs,
                    target.peaks.source, efficiency=efficiency, layer_overhead_ms=layer_overhead_ms)


def required_peaks(target: Target, precision: str) -> tuple[float, float]:
    """(peak tera-ops/s for `precision`, memory bandwidth GB/s) of the target, or a UserError
    naming the file and the keys to fill in."""
    if precision not in PEAK_KEY:
        raise UserError(f"no analytical latency model for precision {precision!r}; use one of {sorted(PEAK_KEY)}")
    peaks: DevicePeaks = target.peaks
    keys = [PEAK_KEY[precision], "memory_bandwidth_gbs"]
    missing = [key for key in keys if not _positive(getattr(peaks, key))]
    if missing:
        raise UserError(
            f"target {target.name!r} has no published {' and '.join(missing)} to predict {precision} latency from: "
            f"fill in peaks.{', peaks.'.join(missing)} (dense, not sparse) and peaks.source in "
            f"{TARGETS_DIR / (target.name + '.yaml')}, or measure on the device (--device ssh://...)")
    return float(getattr(peaks, keys[0])), float(peaks.memory_bandwidth_gbs)


def estimate(layers: list[LayerWork], target_name: str, precision: str, peak_tops: float, bandwidth_gbs: float,
             source: str = "", *, efficiency: float = COMPUTE_EFFICIENCY,
             layer_overhead_ms: float = LAYER_OVERHEAD_MS) -> AnalyticalEstimate:
    """The roofline sum over profiled layers, for explicit peaks (tera-ops/s, GB/s)."""
    if not (0 < efficiency <= 1):
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    element_bytes = BYTES_PER_ELEMENT[precision]
    ops_per_ms = peak_tops * 1e12 * efficiency / 1e3
    bytes_per_ms = bandwidth_gbs * 1e9 / 1e3
    estimates = []
    for work in layers:
        moved = work.elements * element_bytes
        estimates.append(LayerEstimate(
            name=work.name, kind=work.kind, ops=work.ops, bytes=moved,
            compute_ms=work.ops / ops_per_ms, memory_ms=moved / bytes_per_ms,
            overhead_ms=layer_overhead_ms if work.fixed_cost else 0.0))
    total = sum(layer.ms for layer in estimates)
    log.debug("analytical latency on %s (%s): %.4f ms over %d layers", target_name, precision, total, len(estimates))
    return AnalyticalEstimate(total_ms=total, target=target_name, precision=precision,
                              source=source or "published peaks", efficiency=efficiency,
                              layer_overhead_ms=layer_overhead_ms, layers=estimates)


def profile_layers(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> list[LayerWork]:
    """The layers one forward pass runs, in order, with their ops and tensor elements moved."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("analytical latency needs an nn.Module whose layers can be hooked, not TorchScript")
    layers: list[LayerWork] = []
    names = {module: name or type(module).__name__ for name, module in model.named_modules()}
    depth = 0  # elementwise ops inside a hooked layer (its own F.conv2d bias add, ...) are not layers

    def pre_hook(_module, _inputs) -> None:
        nonlocal depth
        depth += 1

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal depth
        depth -= 1
        work = _module_work(names[module], module, inputs[0], output)
        if work is not None:
            layers.append(work)

    handles = []
    for module in model.modules():
        if isinstance(module, (*_CONV, nn.Linear, *_POOL)):
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))

    class ElementwiseMode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if depth == 0 and func in _ELEMENTWISE and len(args) >= 2:
                work = _elementwise_work(_ELEMENTWISE[func], len(layers), args[0], args[1], result)
                if work is not None:
                    layers.append(work)
            return result

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), ElementwiseMode():
            # On the model's device: a model built under `torch.device("meta")` profiles in
            # milliseconds however large it is, as only shapes matter here.
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(torch.zeros(batch, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return layers


def _module_work(name: str, module: nn.Module, x: torch.Tensor, output: Any) -> LayerWork | None:
    if not isinstance(output, torch.Tensor):
        return None
    weights = sum(p.numel() for p in module.parameters(recurse=False))
    elements = weights + x.numel() + output.numel()
    if isinstance(module, _CONV):
        # Same count as edgekd.models.profile.count_macs: each output element is one dot product
        # over (in_channels / groups) x kernel window. Transposed convs scatter instead: count per input.
        kernel = math.prod(module.kernel_size)
        per_out = (module.in_channels // module.groups) * kernel
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            macs = x.numel() * (module.out_channels // module.groups) * kernel
        else:
            macs = output.numel() * per_out
        return LayerWork(name, "conv", 2 * macs, elements, True)
    if isinstance(module, nn.Linear):
        return LayerWork(name, "linear", 2 * output.numel() * module.in_features, elements, True)
    # Pools: one op per element of each window; an adaptive pool reads its whole input once.
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        ops = x.numel()
    else:
        window = math.prod(kernel) if isinstance(kernel, tuple) else kernel ** (x.dim() - 2)
        ops = output.numel() * window
    return LayerWork(name, "pool", ops, elements, True)


def _elementwise_work(kind: str, index: int, a: Any, b: Any, result: Any) -> LayerWork | None:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and isinstance(result, torch.Tensor)):
        return None  # x + 1, x * scale: folded into a neighbour by any compiler
    if kind == "add" and a.shape == b.shape:
        # Residual add: fused into the epilogue of the conv producing one operand; it costs the
        # read of the other operand, no kernel of its own.
        return LayerWork(f"add_{index}", "add", result.numel(), b.numel(), False)
    return LayerWork(f"{kind}_{index}", kind, result.numel(), a.numel() + b.numel() + result.numel(), True)


_ELEMENTWISE: dict[Callable, str] = {
    torch.add: "add", torch.Tensor.add: "add", torch.Tensor.add_: "add",
    torch.Tensor.__add__: "add", torch.Tensor.__iadd__: "add", torch.Tensor.__radd__: "add",
    torch.mul: "mul", torch.Tensor.mul: "mul", torch.Tensor.mul_: "mul",
    torch.Tensor.__mul__: "mul", torch.Tensor.__imul__: "mul", torch.Tensor.__rmul__: "mul",
}


def calibrated_factor(target_name: str, input_shape: tuple[int, ...], precision: str, *,
                      target: Target | None = None) -> tuple[float, int] | None:
    """(factor, records used): the geometric mean of measured p50 / analytical prediction over the
    target's latency records at `input_shape` and `precision` (benchmarks/<target>/records.jsonl,
    edgekd/latency/records.py). Multiply an AnalyticalEstimate's total_ms by it once the device
    has been measured; still a prediction, label it "predicted (analytical x records)". None when
    no usable record exists. A geometric mean, because the errors are ratios: one architecture
    off by 2x and one by 0.5x should cancel, not average to 1.25x."""
    from edgekd.latency.records import load_records
    from edgekd.models.arch import build_model
    from edgekd.target import load_target

    target = target or load_target(target_name)
    peak_tops, bandwidth_gbs = required_peaks(target, precision)
    logs, skipped = [], 0
    for record in load_records(target_name, input_shape, precision):
        try:
            # The classifier's size changes the prediction: a record without num_classes cannot be used.
            with torch.device("meta"):  # shapes only: building and profiling take milliseconds
                model = build_model(record["arch"], int(input_shape[0]), int(record["num_classes"]))
        except (UserError, KeyError, TypeError, ValueError) as exc:
            skipped += 1
            log.debug("latency record not usable for calibration: %s", exc)
            continue
        predicted = estimate(profile_layers(model, tuple(input_shape)), target.name, precision,
                             peak_tops, bandwidth_gbs).total_ms
        logs.append(math.log(record["measured_p50_ms"] / predicted))
    if skipped:
        log.warning("%s: skipped %d latency record(s) whose architecture or class count cannot be rebuilt",
                    target_name, skipped)
    if not logs:
        return None
    factor = math.exp(sum(logs) / len(logs))
    log.info("analytical latency on %s (%s): measured / predicted = %.3f over %d record(s)",
             target_name, precision, factor, len(logs))
    return factor, len(logs)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
