"""Report rendering: the table, the findings a product team must not miss, and no latency without
its source."""

from __future__ import annotations

from labels import unlabelled_latencies

from edgekd.report.markdown import findings, render_markdown


def model(accuracy: float, p50: float, precision: str = "fp32", source: str = "measured") -> dict:
    timed = source == "measured"
    return {"arch": "a", "precision": precision, "accuracy": accuracy,
            "latency_ms": {"p50": p50, "p90": p50 * 1.1 if timed else None, "p99": p50 * 1.2 if timed else None},
            "latency_source": source, "latency_detail": "" if timed else "from the device's published peaks",
            "throughput_ips": 1000.0 if timed else None, "throughput_batch": 32, "size_mb": 1.0, "params": 1000,
            "macs": 2_000_000, "artifact": "x.xml", "accuracy_source": "openvino artifact"}


def report(int8_p50: float, int8_accuracy: float = 0.955, budget_ms: float = 1.0, source: str = "measured") -> dict:
    models = {"teacher": model(0.97, 2.0, source=source), "student_fp32": model(0.96, 0.5, source=source),
              "student_int8": model(int8_accuracy, int8_p50, "int8", source=source)}
    conditions = {"runtime": "openvino x", "device": "cpu", "runtime_precision": "f32", "threads": 2,
                  "warmup": 1, "runs": 2, "date": "today"}
    if source != "measured":
        conditions |= {"not_measured": "no TensorRT here", "peaks_source": "NVIDIA's data sheet"}
    return {
        "target": "x86-cpu", "budget_ms": budget_ms, "budget_source": "--budget-ms",
        "budget_met": int8_p50 <= budget_ms, "budget_met_source": source, "edgekd_version": "0",
        "speedup_p50": 2.0 / int8_p50, "speedup_p50_source": source,
        "dataset": {"name": "digits", "n_train": 1, "n_val": 1, "n_test": 1, "input_shape": [1, 8, 8]},
        "teacher_source": "t", "models": models,
        "stages": {"search": {"seconds": 1.0, "chosen": "a", "chosen_estimate_ms": 0.25,
                              "chosen_estimate_source": source}},
        "search": {"trials": 3, "candidates": 2, "score": "params", "latency": "predicted", "fitting": 1,
                   "limit_ms": 0.8, "chosen": "a",
                   "front": [{"name": "a", "score": 1.0, "latency_ms": 0.25, "latency_source": source, "params": 9}],
                   "attempts": [{"student": "a", "predicted_ms": 0.25, "search_measured_ms": None,
                                 "search_latency_source": source, "bench_p50_ms": int8_p50,
                                 "bench_latency_source": source, "accuracy": int8_accuracy, "budget_ms": budget_ms,
                                 "budget_met": int8_p50 <= budget_ms}]},
        "conditions": conditions,
        "environment": {k: "v" for k in ("python", "torch", "openvino", "nncf", "onnxruntime")},
        "command": "edgekd compress",
    }


def test_table_rows_and_speedups():
    text = render_markdown(report(int8_p50=0.25))
    assert "| student INT8 | a | int8 | 95.50% | 0.2500 ms measured |" in text
    assert "| 8.00x |" in text  # 2.0 / 0.25
    assert "**met** on measured latency" in text and "edgekd compress" in text


def test_no_findings_when_all_is_well():
    assert findings(report(int8_p50=0.25)) == []


def test_findings_say_when_int8_is_not_faster_and_when_budget_is_missed():
    text = "\n".join(findings(report(int8_p50=1.5, int8_accuracy=0.90)))
    assert "Budget missed" in text and "1.5000 ms measured" in text
    assert "INT8 is not faster than fp32" in text
    assert "INT8 costs 6.00 points" in text


def test_predicted_report_labels_every_latency_and_never_claims_a_measurement():
    text = render_markdown(report(int8_p50=0.25, source="predicted (analytical)"))
    assert unlabelled_latencies(text) == []
    assert "0.2500 ms predicted (analytical)" in text
    assert "(predicted)" in text  # speed-ups of predicted latencies
    assert "measured today" not in text and "timed runs" not in text
    assert "Nothing was timed" in text and "NOT a measurement" in text


def test_measured_report_labels_every_latency():
    assert unlabelled_latencies(render_markdown(report(int8_p50=0.25))) == []
