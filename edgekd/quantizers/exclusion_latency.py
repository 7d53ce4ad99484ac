"""What keeping a layer in float costs in latency, measured on the target's backend.

Variants of one model are exported as the target deploys them and timed side by side in one run:
the float model, the all-INT8 model, the final model (every exclusion), and for each excluded
layer the all-INT8 model with only that layer in float. A layer's cost is the median over
`rounds` of p50(INT8 + layer float) - p50(all INT8) taken in the same round; each round times the
variants in a rotated order, so slow drift on a busy machine hits every variant alike (variants
are compared as ratios measured in one run). Where the backend cannot run here (TensorRT
without a GPU, Core ML off macOS, a remote runner) nothing is timed and the report says
"not measured (reason)".
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from edgekd.backends import artifact_accuracy, get_backend
from edgekd.data import Split
from edgekd.errors import UserError
from edgekd.latency.lut import quiet_exports
from edgekd.target import Target

log = logging.getLogger(__name__)


def not_measurable_reason(target: Target) -> str | None:
    """None when this machine can time the target's artifacts, else why not."""
    if target.runner != "local":
        return f"the target runs on {target.runner}; exclusion timing runs only on this machine"
    from edgekd.target import why_not_measurable

    return why_not_measurable(target)


def measure_exclusion_latency(
    model: nn.Module,
    quantizer: ModuleType,
    calibration_x: torch.Tensor,
    exclusions: Sequence[str],
    *,
    target: Target,
    quantized: nn.Module,
    final: nn.Module,
    val_split: Split | None = None,
    batch_size: int = 64,
    rounds: int = 3,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Latency of the float, all-INT8 and final variants and of each exclusion (module doc), with the
    target's bench protocol (warmup, runs, threads) at batch 1. With `val_split`, also the val
    accuracy of the final artifact as deployed. `quantized`/`final`: the all-INT8 and final models
    already made; the per-layer variants are quantized here."""
    reason = not_measurable_reason(target)
    if reason is not None:
        log.info("ptq: exclusion latency not measured (%s)", reason)
        return {"status": f"not measured ({reason})", "exclusions": {layer: f"not measured ({reason})"
                                                                     for layer in exclusions}}
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    variants: dict[str, nn.Module] = {"float": model, "int8": quantized}
    if exclusions:
        variants["int8_final"] = final
    if len(exclusions) > 1:  # with one exclusion, the final model is that variant
        for layer in exclusions:
            variants[f"int8+{layer}"] = quantizer.prepare_int8(model, calibration_x, batch_size=batch_size,
                                                               exclude=[layer])
    try:
        backend = get_backend(target.backend)
        with tempfile.TemporaryDirectory(prefix="edgekd-ptq-") as tmp, quiet_exports():
            folder = Path(workdir) if workdir is not None else Path(tmp)
            example = calibration_x[:1]
            paths = {name: _export(backend, quantizer, target, variant, example, folder / name.replace("/", "_"),
                                   quantized=name != "float")
                     for name, variant in variants.items()}
            timings = _time_side_by_side(backend, paths, target, rounds)
            deployed_accuracy = None
            if val_split is not None:
                deployed = paths["int8_final" if exclusions else "int8"]
                deployed_accuracy = artifact_accuracy(backend, deployed, val_split)
    except UserError as exc:  # e.g. a runtime that is installed but cannot build this model
        log.warning("ptq: exclusion latency not measured: %s", exc)
        return {"status": f"not measured ({exc})", "exclusions": {layer: f"not measured ({exc})" for layer in exclusions}}
    from edgekd.measure import cpu_name
    from edgekd.target import baseline_precision

    p50 = {name: statistics.median(values) for name, values in timings.items()}
    costs = {}
    for layer in exclusions:
        name = f"int8+{layer}" if len(exclusions) > 1 else "int8_final"
        diffs = [a - b for a, b in zip(timings[name], timings["int8"])]
        costs[layer] = {"p50_ms": p50[name], "cost_ms": statistics.median(diffs),
                        "cost_pct": 100.0 * statistics.median(diffs) / p50["int8"],
                        "spread_ms": max(diffs) - min(diffs)}
    report = {
        "status": "measured",
        "backend": backend.NAME, "backend_version": backend.version(), "device": cpu_name(),
        "precision_note": backend.precision_note(), "float_precision": baseline_precision(target),
        "protocol": {"batch": 1, "warmup": target.bench.warmup, "runs": target.bench.runs,
                     "threads": target.bench.threads, "rounds": rounds, "order": "rotated each round"},
        "p50_ms": p50, "rounds_p50_ms": timings, "exclusions": costs,
    }
    if deployed_accuracy is not None:
        report["final_artifact_accuracy"] = deployed_accuracy
    for layer, cost in costs.items():
        log.info("ptq: keeping %s in float costs %+.4f ms (%+.1f%%) at batch 1 on %s", layer, cost["cost_ms"],
                 cost["cost_pct"], backend.NAME)
    return report


def _export(backend: ModuleType, quantizer: ModuleType, target: Target, model: nn.Module, example: torch.Tensor,
            stem: Path, *, quantized: bool) -> Path:
    """One variant exported the way the export stage ships it for this backend."""
    from edgekd.target import baseline_precision

    path = stem.with_suffix(backend.SUFFIX)
    metadata = {"purpose": "PTQ exclusion latency probe", "precision": "int8" if quantized else "float"}
    if backend.NAME == "tensorrt":
        onnx_path = stem.with_suffix(".onnx")
        precision = "int8" if quantized else baseline_precision(target)
        if quantized:
            quantizer.export_onnx(model, example, onnx_path)  # the quantizer's explicit Q/DQ ONNX
        else:
            backend.export_onnx(model, example, onnx_path, metadata=metadata, precision=precision)
        return backend.export_from_onnx(onnx_path, path, metadata=metadata, precision=precision,
                                        input_chw=tuple(example.shape[1:]), max_batch=1)
    if backend.NAME == "coreml":
        options = {"compute_units": target.compute_units}
        if target.deployment_target:
            options["deployment_target"] = target.deployment_target
        if quantized:
            return quantizer.export_mlpackage(model, example, path, metadata=metadata, **options)
        return backend.export(model, example, path, metadata=metadata, precision=baseline_precision(target), **options)
    return backend.export(model, example, path, metadata=metadata)  # OpenVINO, ONNX Runtime: fake-quant in, INT8 out


def _time_side_by_side(backend: ModuleType, paths: dict[str, Path], target: Target, rounds: int) -> dict[str, list[float]]:
    """p50 of every variant in each round, the order rotated by one each round."""
    names = list(paths)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            stats = backend.benchmark(paths[name], warmup=target.bench.warmup, runs=target.bench.runs,
                                      threads=target.bench.threads)
            timings[name].append(stats.p50_ms)
    return timings
