"""Report rendering: the table, and the findings a product team must not miss."""

from __future__ import annotations

from edgekd.report.stage import findings, render_markdown


def model(accuracy: float, p50: float, precision: str = "fp32") -> dict:
    return {"arch": "a", "precision": precision, "accuracy": accuracy,
            "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2}, "throughput_ips": 1000.0,
            "throughput_batch": 32, "size_mb": 1.0, "params": 1000, "macs": 2_000_000, "artifact": "x.xml"}


def report(int8_p50: float, int8_accuracy: float = 0.955, budget_ms: float = 1.0) -> dict:
    models = {"teacher": model(0.97, 2.0), "student_fp32": model(0.96, 0.5),
              "student_int8": model(int8_accuracy, int8_p50, "int8")}
    return {
        "target": "x86-cpu", "budget_ms": budget_ms, "budget_source": "--budget-ms",
        "budget_met": int8_p50 <= budget_ms, "edgekd_version": "0",
        "dataset": {"name": "digits", "n_train": 1, "n_val": 1, "n_test": 1, "input_shape": [1, 8, 8]},
        "teacher_source": "t", "models": models, "stages": {"search": {"seconds": 1.0, "chosen": "a"}},
        "conditions": {"runtime": "openvino x", "device": "cpu", "runtime_precision": "f32", "threads": 2,
                       "warmup": 1, "runs": 2, "date": "today"},
        "environment": {k: "v" for k in ("python", "torch", "openvino", "nncf", "onnxruntime")},
        "command": "edgekd compress",
    }


def test_table_rows_and_speedups():
    text = render_markdown(report(int8_p50=0.25))
    assert "| student INT8 | a | int8 | 95.50% | 0.2500 |" in text
    assert "| 8.00x |" in text  # 2.0 / 0.25
    assert "**met**" in text and "edgekd compress" in text


def test_no_findings_when_all_is_well():
    assert findings(report(int8_p50=0.25)) == []


def test_findings_say_when_int8_is_not_faster_and_when_budget_is_missed():
    text = "\n".join(findings(report(int8_p50=1.5, int8_accuracy=0.90)))
    assert "Budget missed" in text and "1.5000 ms" in text
    assert "INT8 is not faster than fp32" in text
    assert "INT8 costs 6.00 points" in text
