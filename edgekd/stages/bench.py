"""Measure the exported artifacts on the target: batch-1 latency (p50/p90/p99 after warm-up),
throughput at a larger batch, size, and test accuracy of the artifact itself run by the target
runtime (not the torch model). Teacher and students are measured in the same run, so their
ratios are fair even though absolute times drift between runs."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from edgekd.backends import get_backend
from edgekd.measure import cpu_name
from edgekd.models import build_model, count_macs, count_params
from edgekd.remote import benchmark_on_target
from edgekd.run import RunContext, write_json
from edgekd.stages.export import artifact_paths

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict[str, Any]:
    data, target, settings = ctx.data, ctx.target, ctx.recipe.bench
    backend = get_backend(target.backend)
    search = ctx.result("search")
    student_arch = search["chosen_arch"]
    student = build_model(student_arch, data.input_shape[0], data.num_classes)
    teacher_name = (ctx.teacher.arch or {}).get("name", "user model")  # TorchScript teachers have no record
    # (arch name, params, MACs) of the torch model behind each artifact
    counts = {
        "teacher": (teacher_name, count_params(ctx.teacher.model), count_macs(ctx.teacher.model, data.input_shape)),
        "student": (student_arch["name"], count_params(student), count_macs(student, data.input_shape)),
    }
    models: dict[str, Any] = {}
    remote_conditions: dict[str, Any] = {}
    for key, path in artifact_paths(ctx).items():
        precision = "fp32" if key != "student_int8" else target.precision
        # Here, or on the device over SSH when the target names a runner (edgekd/remote).
        latency = benchmark_on_target(target, path, backend, settings.warmup, settings.runs, settings.threads)
        batch = settings.throughput_batch
        bulk = benchmark_on_target(target, path, backend, max(1, settings.warmup // 5), settings.throughput_runs,
                                   settings.threads, batch=batch)
        if hasattr(latency, "conditions"):
            remote_conditions = latency.conditions()  # the device's CPU and runtime, not this machine's
        accuracy = backend.accuracy(path, data.test.x, data.test.y)
        arch, params, macs = counts["teacher" if key == "teacher" else "student"]
        models[key] = {
            "arch": arch,
            "precision": precision,
            "accuracy": accuracy,
            "latency_ms": {"p50": latency.p50_ms, "p90": latency.p90_ms, "p99": latency.p99_ms},
            "throughput_ips": round(batch / (bulk.p50_ms / 1000.0), 1),
            "throughput_batch": batch,
            "size_mb": round(backend.size_mb(path), 4),
            "params": params,
            "macs": macs,
            "artifact": str(path.relative_to(ctx.run_dir)),
        }
        log.info("bench: %-13s %s acc %.4f  p50 %.4f ms  p99 %.4f ms  %.0f img/s at batch %d",
                 key, precision, accuracy, latency.p50_ms, latency.p99_ms, models[key]["throughput_ips"], batch)
    deployed = models.get("student_int8", models["student_fp32"])
    budget_ms = search["budget_ms"]
    result = {
        "models": models,
        "budget_ms": budget_ms,
        "budget_met": deployed["latency_ms"]["p50"] <= budget_ms,
        "speedup_p50": models["teacher"]["latency_ms"]["p50"] / deployed["latency_ms"]["p50"],
        "conditions": conditions(ctx, backend) | remote_conditions,
    }
    if not result["budget_met"]:
        log.warning("bench: the deployed student measures %.4f ms p50, over the budget of %.4f ms",
                    deployed["latency_ms"]["p50"], budget_ms)
    write_json(ctx.stage_dir("bench") / "bench.json", result)
    record_measurement(ctx, student_arch, deployed, result["conditions"])
    return result


def record_measurement(ctx: RunContext, arch: dict[str, Any], deployed: dict[str, Any], conditions: dict[str, Any]) -> None:
    """The feedback loop: append (arch, predicted, measured, conditions) to the target's latency
    records, from which the predictor recalibrates on the next search."""
    from edgekd.latency.records import append_record
    from edgekd.stages.search import predicted_ms

    search = ctx.result("search")
    append_record(ctx.target.name, {
        "arch": {k: v for k, v in arch.items() if k != "name"}, "name": arch.get("name"),
        "input_shape": list(ctx.data.input_shape), "num_classes": ctx.data.num_classes,
        "precision": deployed["precision"], "predicted_ms": predicted_ms(search),
        "measured_p50_ms": deployed["latency_ms"]["p50"], "measured_p90_ms": deployed["latency_ms"]["p90"],
        "source": "bench", "run_dir": str(ctx.run_dir), **conditions,
    })


def conditions(ctx: RunContext, backend) -> dict[str, Any]:
    """What a latency number depends on, recorded beside it."""
    settings = ctx.recipe.bench
    return {
        "device": cpu_name(), "target": ctx.target.name, "runtime": f"{backend.NAME} {backend.version()}",
        "runtime_precision": backend.precision_note(), "threads": settings.threads or os.cpu_count(),
        "warmup": settings.warmup, "runs": settings.runs, "batch": 1,
        "throughput_batch": settings.throughput_batch, "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def summary(metrics: dict[str, Any]) -> str:
    deployed = metrics["models"].get("student_int8", metrics["models"]["student_fp32"])
    return (f"student {deployed['precision']} p50 {deployed['latency_ms']['p50']:.4f} ms, accuracy "
            f"{deployed['accuracy']:.4f}; {metrics['speedup_p50']:.2f}x faster than the teacher; "
            f"budget {'met' if metrics['budget_met'] else 'MISSED'}")
