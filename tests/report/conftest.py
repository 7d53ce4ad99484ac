"""Report dicts built from real measurements of tiny OpenVINO models (timed, profiled, loaded in a
fresh process), in report.json's shape, plus the same run as a device that was not attached
(latencies predicted). Session-scoped: the measurements take a few seconds once."""

from __future__ import annotations

import copy

import pytest
import torch
from backends.tiny_cnn import TinyCNN  # tests/ is on sys.path (tests/conftest.py)

from edgekd.report.fields import models_for_report


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """teacher / student_fp32 / student_int8 OpenVINO IRs (the INT8 one quantized by NNCF)."""
    ovb = pytest.importorskip("edgekd.backends.openvino")
    nncf = pytest.importorskip("nncf")
    folder = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    teacher, student = TinyCNN((32, 64)).eval(), TinyCNN((8, 16)).eval()
    quantized = nncf.quantize(student, nncf.Dataset([torch.rand(8, 1, 8, 8)]), subset_size=8)
    example = torch.rand(1, 1, 8, 8)
    return {key: (ovb.export(model, example, folder / f"{key}.xml", metadata={}), model)
            for key, model in (("teacher", teacher), ("student_fp32", student), ("student_int8", quantized))}


@pytest.fixture(scope="session")
def measured_bench(artifacts):
    """bench.json's models, measured here: latency with raw timings, per-layer counters, load."""
    from edgekd.backends import openvino as ovb
    from edgekd.models import count_macs, count_params

    torch.manual_seed(1)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    models = {}
    for key, (path, model) in artifacts.items():
        latency = ovb.benchmark(path, warmup=5, runs=60)
        profile = ovb.profile_layers(path, warmup=2, runs=10)
        load = ovb.measure_load(path)
        models[key] = {
            "arch": key, "precision": "int8" if key == "student_int8" else "fp32",
            "params": count_params(model), "macs": count_macs(model, (1, 8, 8)),
            "latency_ms": {"p50": latency.p50_ms, "p90": latency.p90_ms, "p99": latency.p99_ms},
            "latency_source": "measured", "throughput_ips": 1000.0 / latency.p50_ms, "throughput_batch": 1,
            "accuracy": ovb.accuracy(path, x, y), "accuracy_source": "openvino artifact",
            "size_mb": round(ovb.size_mb(path), 4), "artifact": path.name, "timings_ms": latency.samples_ms,
            "per_layer": profile, **load,
        }
    return models


def report_from(models: dict, *, target: str = "x86-cpu", budget_ms: float = 1.0) -> dict:
    """A report dict in build_report's shape around bench's `models`."""
    deployed = models["student_int8"]
    teacher_p50, p50 = models["teacher"]["latency_ms"]["p50"], deployed["latency_ms"]["p50"]
    source = deployed["latency_source"]
    return {
        "edgekd_version": "0.test", "target": target, "budget_ms": budget_ms, "budget_source": "--budget-ms",
        "budget_met": p50 <= budget_ms, "speedup_p50": round(teacher_p50 / p50, 3),
        "dataset": {"name": "random", "n_train": 0, "n_val": 0, "n_test": 64, "input_shape": [1, 8, 8],
                    "source": "tests"},
        "teacher_source": "SmallCNN <script>alert(1)</script>",  # user text: must come out escaped
        "search": {"score": "params", "latency": "measured", "trials": 4, "candidates": 3, "fitting": 2,
                   "limit_ms": budget_ms * 0.8, "chosen": "student",
                   "front": [{"name": "student", "score": float(deployed["params"]), "latency_ms": p50,
                              "latency_source": source, "params": deployed["params"]},
                             {"name": "smaller", "score": 100.0, "latency_ms": p50 * 0.8, "latency_source": source,
                              "params": 100}],
                   "finalists": [{"name": "student", "predicted_ms": p50, "latency_source": source,
                                  "measured_ms": p50 if source == "measured" else None, "fits": True}],
                   "attempts": [{"student": "student", "predicted_ms": None, "search_measured_ms": p50,
                                 "bench_p50_ms": p50, "accuracy": deployed["accuracy"], "budget_ms": budget_ms,
                                 "budget_met": p50 <= budget_ms}]},
        "export": {}, "models": models_for_report(models),
        "stages": {"search": {"seconds": 1.5}, "distill": {"seconds": 2.0}, "bench": {"seconds": 0.5}},
        "conditions": {"device": "this CPU", "target": target, "runtime": "openvino test",
                       "runtime_precision": "f32 inference precision hint", "threads": 2, "warmup": 5, "runs": 60,
                       "batch": 1, "throughput_batch": 1, "date": "2026-12-04T12:00:00"},
        "environment": {"cpu": "this CPU", "python": "3", "torch": "t", "openvino": "o", "nncf": "n",
                        "onnxruntime": "r", "gpu": "none", "power_mode": "n/a", "precision_hint": "f32"},
        "predicted_vs_measured": [{"name": "student", "precision": "int8", "predicted_ms": p50 * 0.9,
                                   "measured_p50_ms": p50, "date": "2026-12-04"}],
        "command": "edgekd compress --target x86-cpu --budget-ms 1.0",
        "run_dir": f"runs/{target}",
    }


@pytest.fixture(scope="session")
def measured_report(measured_bench):
    return report_from(measured_bench)


@pytest.fixture(scope="session")
def predicted_report(measured_bench):
    """The same models on a device that is not attached: latencies predicted, nothing timed."""
    models = copy.deepcopy(measured_bench)
    for scale, model in zip((3.0, 1.5, 1.0), models.values()):
        for key in ("timings_ms", "per_layer", "load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes",
                    "memory_method"):
            model.pop(key, None)
        model["latency_ms"] = {"p50": 0.05 * scale, "p90": None, "p99": None}
        model["latency_source"] = "predicted (analytical)"
        model["throughput_ips"] = None
        model["profile_unavailable"] = "no TensorRT engine was built here"
    report = report_from(models, target="jetson-orin")
    report["conditions"]["not_measured"] = "TensorRT is not installed here"
    report["predicted_vs_measured"] = []
    return report
