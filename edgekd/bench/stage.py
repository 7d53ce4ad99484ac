"""Measure the exported artifacts on the target: batch-1 latency (p50/p90/p99 after warm-up),
throughput at a larger batch, size, and test accuracy of the artifact itself run by the target
runtime (not the torch model). Teacher and students are measured in the same run, so their
ratios are fair even though absolute times drift between runs. Where the target cannot run here,
latency is predicted (and labelled so) and accuracy comes from the closest runnable stand-in.

Every bench of a measured student is appended to the target's latency records, which the
predictors calibrate on: the feedback loop, kept as data.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from edgekd.backends import accuracy_here, get_backend
from edgekd.bench.profile import profile_artifact
from edgekd.io import write_json
from edgekd.latency.predicted import predicted_latency
from edgekd.latency.records import append_record
from edgekd.latency.source import MEASURED, Latency
from edgekd.measure import cpu_name
from edgekd.models import count_macs, count_params
from edgekd.prune.gate import ArtifactMeasurement, decide
from edgekd.models.deployed import load_deployed_models
from edgekd.models.student import is_derived
from edgekd.remote import benchmark_on_target
from edgekd.results import BenchResult, ModelBench, check_budget, to_plain
from edgekd.run import RunContext
from edgekd.target import runtime_version, why_not_measurable

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> BenchResult:
    data, target, settings = ctx.data, ctx.target, ctx.recipe.bench
    backend = get_backend(target.backend)
    search, export = ctx.result("search"), ctx.result("export")
    deployed_models = load_deployed_models(ctx)
    student, student_arch = deployed_models["student_fp32"][0], deployed_models["student_fp32"][1]
    pruned = ctx.is_done("prune") and ctx.result("prune").shipped
    teacher_name = (ctx.teacher.arch or {}).get("name", "user model")  # TorchScript teachers have no record
    # (arch name, params, MACs) of the torch model behind each artifact (the pruned one when it shipped)
    counts = {
        "teacher": (teacher_name, count_params(ctx.teacher.model), count_macs(ctx.teacher.model, data.input_shape)),
        "student": ((student_arch or {}).get("name", "student"), count_params(student),
                    count_macs(student, data.input_shape)),
    }
    unmeasurable = why_not_measurable(target)
    runtime_here = target.runner == "local" and unmeasurable is None
    if unmeasurable is not None:
        log.warning("bench: %s cannot run here (%s): latencies are PREDICTED from the device's published peaks, "
                    "accuracy is measured on the closest runnable stand-in", target.name, unmeasurable)
    models: dict[str, ModelBench] = {}
    remote_conditions: dict[str, Any] = {}
    for key, (model, _, precision) in deployed_models.items():
        path = ctx.run_dir / export.artifacts[key]  # where the artifact is, or would be had it been built here
        arch, params, macs = counts["teacher" if key == "teacher" else "student"]
        timings, profile, conditions = None, None, None
        if unmeasurable is None:
            latency, throughput, conditions, timings = _measure(ctx, backend, backend.timed_path(path))
            remote_conditions = conditions or remote_conditions  # the device's CPU and runtime, not this machine's
            if target.runner == "local":
                profile = profile_artifact(target.backend, backend.timed_path(path), warmup=settings.warmup,
                                           runs=settings.runs, threads=settings.threads)
        else:
            # Predicted from the float architecture at the precision: the fake-quantized copy's
            # quantizer modules are not layers of the deployed network.
            float_model = deployed_models["student_fp32" if key == "student_int8" else key][0]
            latency, throughput = predicted_latency(target, float_model, tuple(data.input_shape), precision), None
        accuracy, accuracy_source = accuracy_here(backend, path, data.test, model, runtime_here=runtime_here)
        shown = path if path.exists() else backend.timed_path(path)
        size_mb = backend.size_mb(path) if path.exists() else shown.stat().st_size / 1e6
        models[key] = ModelBench(
            arch=arch, precision=precision, params=params, macs=macs, latency=latency, throughput_ips=throughput,
            throughput_batch=settings.throughput_batch, accuracy=accuracy, accuracy_source=accuracy_source,
            size_mb=round(size_mb, 4), artifact=str(shown.relative_to(ctx.run_dir)),
            size_of=None if path.exists() else f"{shown.name} (the artifact is built on the device)",
            timings_ms=timings, profile=profile, device_conditions=conditions if unmeasurable is None else None)
        p99 = f"  p99 {latency.p99_ms:.4f} ms" if latency.p99_ms else ""
        log.info("bench: %-13s %s acc %.4f (%s)  p50 %s%s", key, precision, accuracy, accuracy_source, latency, p99)
    result = BenchResult(models=models, conditions=conditions_of(ctx, backend) | remote_conditions,
                         not_measured=unmeasurable, int8_gate=int8_against_float(ctx, models))
    check = check_budget(search, result)
    if not check.met:
        log.warning("bench: the deployed student's p50 is %s, over the budget of %.4f ms", check.latency,
                    check.budget_ms)
    write_json(ctx.stage_dir("bench") / "bench.json", to_plain(result) | {
        "budget_ms": check.budget_ms, "budget_met": check.met, "budget_met_source": check.latency.source,
        "speedup_p50": result.speedup, "speedup_p50_source": result.speedup_source})
    # The records hold measurements only: a prediction must not calibrate predictions.
    if result.deployed.latency.measured and pruned:
        # Its record is the unpruned architecture's: a table keyed by it would learn a wrong latency.
        log.info("bench: the shipped student is pruned; not added to the %s latency records", target.name)
    elif result.deployed.latency.measured and is_derived(student_arch):
        # Its record is a recipe applied to this teacher: without the teacher it names no
        # architecture, so nothing that reads the records (the predictors' calibration) could use it.
        log.info("bench: %s is cut from the teacher module; not added to the %s latency records",
                 student_arch["name"], target.name)
    elif result.deployed.latency.measured:
        record_measurement(ctx, student_arch, result.deployed, result.conditions)
    return result


def int8_against_float(ctx: RunContext, models: dict[str, ModelBench]) -> dict[str, Any] | None:
    """The gate's rule applied to INT8: is the INT8 artifact faster than its float twin by
    prune.min_speedup, within prune.max_accuracy_drop_pt? The INT8 artifact still ships (it is the
    target's precision), but a failed check is a warning here and a finding in the report."""
    if "student_int8" not in models:
        return None
    settings = ctx.recipe.prune
    sides = [ArtifactMeasurement(f"student {m.precision} ({m.artifact})", m.latency.ms, m.latency.source, m.accuracy)
             for m in (models["student_fp32"], models["student_int8"])]
    decision = decide(*sides, min_speedup=settings.min_speedup, max_accuracy_drop_pt=settings.max_accuracy_drop_pt,
                      step="INT8", rollback=False)
    if not decision.ship_candidate:
        log.warning("bench: %s (the INT8 artifact still ships: it is %s's precision; set the target's "
                    "precision to fp32 to ship float)", decision.reason, ctx.target.name)
    return decision.to_dict()


def _measure(ctx: RunContext, backend, path: Path) -> tuple[Latency, float, dict[str, Any] | None, list | None]:
    """Batch-1 latency and throughput at bench.throughput_batch, here or on the device over SSH
    when the target names a runner (edgekd/remote); the device's conditions when remote, and
    every timed call when the timing kept them."""
    settings, target = ctx.recipe.bench, ctx.target
    stats = benchmark_on_target(target, path, backend, settings.warmup, settings.runs, settings.threads)
    batch = settings.throughput_batch
    device = getattr(stats, "host", None)  # with a pool: the same device measures the throughput
    bulk = benchmark_on_target(target, path, backend, max(1, settings.warmup // 5), settings.throughput_runs,
                               settings.threads, batch=batch, prefer=device)
    latency = Latency(stats.p50_ms, MEASURED, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, device=device or target.runner)
    conditions = stats.conditions() if hasattr(stats, "conditions") else None
    return latency, round(batch / (bulk.p50_ms / 1000.0), 1), conditions, getattr(stats, "samples_ms", None)


def record_measurement(ctx: RunContext, arch: dict[str, Any], deployed: ModelBench, conditions: dict[str, Any]) -> None:
    """The feedback loop: append (arch, predicted, measured, conditions) to the target's latency
    records, from which the predictor recalibrates on the next search."""
    search = ctx.result("search")
    estimate = search.chosen_estimate
    append_record(ctx.target.name, {
        "arch": {k: v for k, v in arch.items() if k != "name"}, "name": arch.get("name"),
        "input_shape": list(ctx.data.input_shape), "num_classes": ctx.data.num_classes,
        "precision": deployed.precision, "predicted_ms": None if estimate.measured else estimate.ms,
        "predicted_source": None if estimate.measured else estimate.source,
        "measured_p50_ms": deployed.latency.ms, "measured_p90_ms": deployed.latency.p90_ms,
        "source": "bench", "run_dir": str(ctx.run_dir), **conditions,
    })


def conditions_of(ctx: RunContext, backend) -> dict[str, Any]:
    """What a latency number depends on, recorded beside it."""
    settings, target = ctx.recipe.bench, ctx.target
    result = {
        "device": cpu_name(), "target": target.name, "runtime": f"{backend.NAME} {runtime_version(backend)}",
        "runtime_precision": backend.precision_note(), "threads": settings.threads or os.cpu_count(),
        "warmup": settings.warmup, "runs": settings.runs, "batch": 1,
        "throughput_batch": settings.throughput_batch, "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if target.power_mode:
        result["power_mode_expected"] = target.power_mode
    reason = why_not_measurable(target)
    if reason is not None:
        result |= {"device": f"{target.description} (not attached: latencies predicted)", "not_measured": reason,
                   "peaks_source": target.peaks.source}
    elif target.runner == "local":
        result |= backend.device_conditions()  # e.g. a Jetson's power mode and clocks
    return result


def summary(result: BenchResult) -> str:
    deployed = result.deployed
    return (f"student {deployed.precision} p50 {deployed.latency}, accuracy {deployed.accuracy:.4f}; "
            f"{result.speedup:.2f}x faster than the teacher ({result.speedup_source})")
