"""Measure the exported artifacts on the target: batch-1 latency (p50/p90/p99 after warm-up),
throughput at a larger batch, size, and test accuracy of the artifact itself run by the target
runtime (not the torch model). Teacher and students are measured in the same run, so their
ratios are fair even though absolute times drift between runs."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from edgekd.backends import get_backend
from edgekd.export.stage import artifact_paths, load_models, onnx_path_for
from edgekd.io import write_json
from edgekd.latency.predicted import predicted_latency
from edgekd.measure import cpu_name
from edgekd.models import count_macs, count_params
from edgekd.models.student import is_derived, student_from_record
from edgekd.remote import benchmark_on_target
from edgekd.run import RunContext
from edgekd.target import baseline_precision, runtime_version, why_not_measurable
from edgekd.training import evaluate_accuracy

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict[str, Any]:
    data, target, settings = ctx.data, ctx.target, ctx.recipe.bench
    backend = get_backend(target.backend)
    search = ctx.result("search")
    student_arch = search["chosen_arch"]
    student = student_from_record(ctx, student_arch)
    teacher_name = (ctx.teacher.arch or {}).get("name", "user model")  # TorchScript teachers have no record
    # (arch name, params, MACs) of the torch model behind each artifact
    counts = {
        "teacher": (teacher_name, count_params(ctx.teacher.model), count_macs(ctx.teacher.model, data.input_shape)),
        "student": (student_arch["name"], count_params(student), count_macs(student, data.input_shape)),
    }
    unmeasurable = why_not_measurable(target)
    if unmeasurable is not None:
        log.warning("bench: %s cannot run here (%s): latencies are PREDICTED from the device's published peaks, "
                    "accuracy is measured on the closest runnable stand-in", target.name, unmeasurable)
    # The torch models are needed only to predict latency, or as the accuracy stand-in.
    torch_models = load_models(ctx) if unmeasurable is not None or target.runner != "local" else None
    models: dict[str, Any] = {}
    remote_conditions: dict[str, Any] = {}
    for key, path in artifact_paths(ctx).items():
        precision = target.precision if key == "student_int8" else baseline_precision(target)
        model = torch_models[key][0] if torch_models else None
        # Latency is predicted from the float architecture at the precision: the fake-quantized
        # copy's quantizer modules are not layers of the deployed network.
        float_model = torch_models["student_fp32" if key == "student_int8" else key][0] if torch_models else None
        arch, params, macs = counts["teacher" if key == "teacher" else "student"]
        entry = {"arch": arch, "precision": precision, "params": params, "macs": macs}
        if unmeasurable is None:
            entry |= _measure(ctx, backend, _timed_artifact(target, path))
            if "conditions" in entry:
                remote_conditions = entry.pop("conditions")  # the device's CPU and runtime, not this machine's
        else:
            predicted = predicted_latency(target, float_model, tuple(data.input_shape), precision)
            entry |= {"latency_ms": {"p50": predicted.ms, "p90": None, "p99": None}, "latency_source": predicted.label,
                      "throughput_ips": None, "throughput_batch": settings.throughput_batch}
        entry |= _accuracy(ctx, backend, path, model,
                           runtime_elsewhere=target.runner != "local" or unmeasurable is not None)
        entry |= _size(backend, path, ctx.run_dir)
        models[key] = entry
        p99 = entry["latency_ms"]["p99"]
        log.info("bench: %-13s %s acc %.4f (%s)  p50 %.4f ms%s (%s)", key, precision, entry["accuracy"],
                 entry["accuracy_source"], entry["latency_ms"]["p50"], f"  p99 {p99:.4f} ms" if p99 else "",
                 entry["latency_source"])
    deployed = models.get("student_int8", models["student_fp32"])
    budget_ms = search["budget_ms"]
    result = {
        "models": models,
        "budget_ms": budget_ms,
        "budget_met": deployed["latency_ms"]["p50"] <= budget_ms,
        "latency_source": deployed["latency_source"],
        "speedup_p50": models["teacher"]["latency_ms"]["p50"] / deployed["latency_ms"]["p50"],
        "conditions": conditions(ctx, backend) | remote_conditions,
    }
    if unmeasurable is not None:
        result["not_measured"] = unmeasurable
    if not result["budget_met"]:
        log.warning("bench: the deployed student's p50 is %.4f ms (%s), over the budget of %.4f ms",
                    deployed["latency_ms"]["p50"], deployed["latency_source"], budget_ms)
    write_json(ctx.stage_dir("bench") / "bench.json", result)
    # The records hold measurements only: a prediction must not calibrate predictions.
    if unmeasurable is None and is_derived(student_arch):
        # Its record is a recipe applied to this teacher: without the teacher it names no
        # architecture, so nothing that reads the records (the predictors' calibration) could use it.
        log.info("bench: %s is cut from the teacher module; not added to the %s latency records",
                 student_arch["name"], target.name)
    elif unmeasurable is None:
        record_measurement(ctx, student_arch, deployed, result["conditions"])
    return result


def _timed_artifact(target, path: Path) -> Path:
    """What the runtime times: the artifact, except a TensorRT engine that export could not build
    here (a remote device): then the ONNX it is built from, which the device turns into an engine."""
    if target.backend == "tensorrt" and not path.exists():
        return onnx_path_for(path)
    return path


def _measure(ctx: RunContext, backend, path: Path) -> dict[str, Any]:
    settings, target = ctx.recipe.bench, ctx.target
    # Here, or on the device over SSH when the target names a runner (edgekd/remote).
    latency = benchmark_on_target(target, path, backend, settings.warmup, settings.runs, settings.threads)
    batch = settings.throughput_batch
    bulk = benchmark_on_target(target, path, backend, max(1, settings.warmup // 5), settings.throughput_runs,
                               settings.threads, batch=batch)
    entry = {"latency_ms": {"p50": latency.p50_ms, "p90": latency.p90_ms, "p99": latency.p99_ms},
             "latency_source": "measured", "throughput_ips": round(batch / (bulk.p50_ms / 1000.0), 1),
             "throughput_batch": batch}
    if hasattr(latency, "conditions"):
        entry["conditions"] = latency.conditions()
    return entry


def _accuracy(ctx: RunContext, backend, path: Path, model, *, runtime_elsewhere: bool) -> dict[str, Any]:
    """Test accuracy of the artifact in the target runtime; where that runtime is not here, of the
    closest stand-in that runs here, named in accuracy_source."""
    test = ctx.data.test
    if path.exists() and not (runtime_elsewhere and ctx.target.backend in ("tensorrt", "coreml")):
        return {"accuracy": backend.accuracy(path, test.x, test.y), "accuracy_source": f"{backend.NAME} artifact"}
    if ctx.target.backend == "tensorrt":
        onnx_path = onnx_path_for(path)  # the ONNX the engine is built from: Q/DQ for INT8
        return {"accuracy": get_backend("onnx").accuracy(onnx_path, test.x, test.y),
                "accuracy_source": f"onnxruntime on {onnx_path.name} (the engine's ONNX)"}
    return {"accuracy": evaluate_accuracy(model, test),
            "accuracy_source": "torch model the artifact was converted from (the runtime is not here)"}


def _size(backend, path: Path, run_dir: Path) -> dict[str, Any]:
    if path.exists():
        return {"size_mb": round(backend.size_mb(path), 4), "artifact": str(path.relative_to(run_dir))}
    onnx_path = onnx_path_for(path)
    return {"size_mb": round(onnx_path.stat().st_size / 1e6, 4), "artifact": str(onnx_path.relative_to(run_dir)),
            "size_of": "the ONNX (no engine built here)"}


def record_measurement(ctx: RunContext, arch: dict[str, Any], deployed: dict[str, Any], conditions: dict[str, Any]) -> None:
    """The feedback loop: append (arch, predicted, measured, conditions) to the target's latency
    records, from which the predictor recalibrates on the next search."""
    from edgekd.latency.records import append_record
    from edgekd.search.stage import predicted_ms

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
    elif target.backend == "tensorrt" and target.runner == "local":
        from edgekd.backends.tensorrt.jetson import jetson_state

        result |= jetson_state()  # nvpmodel mode, jetson_clocks, L4T/JetPack ("unknown" off a Jetson)
    return result


def summary(metrics: dict[str, Any]) -> str:
    deployed = metrics["models"].get("student_int8", metrics["models"]["student_fp32"])
    return (f"student {deployed['precision']} p50 {deployed['latency_ms']['p50']:.4f} ms, accuracy "
            f"{deployed['accuracy']:.4f}; {metrics['speedup_p50']:.2f}x faster than the teacher; "
            f"budget {'met' if metrics['budget_met'] else 'MISSED'}")
