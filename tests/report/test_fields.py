"""The fields report.json gained: a summary of the raw timings (the raw samples stay in
bench.json), the target's predicted-vs-measured records, and the environment's GPU and power mode."""

from __future__ import annotations

from edgekd.latency.records import append_record
from edgekd.report.fields import (
    environment_extras,
    models_for_report,
    predicted_vs_measured,
    raw_timings,
)


def test_raw_timings_become_a_summary_and_existing_keys_stay(measured_bench):
    report_models = models_for_report(measured_bench)
    for key, entry in report_models.items():
        assert "timings_ms" not in entry and "timings_ms" in measured_bench[key]  # bench's dict is not changed
        samples = measured_bench[key]["timings_ms"]
        assert entry["timings"]["count"] == len(samples) == 60
        assert entry["timings"]["min"] == round(min(samples), 4) and entry["timings"]["max"] == round(max(samples), 4)
        assert set(entry) >= {"latency_ms", "accuracy", "size_mb", "per_layer", "load_ms", "peak_memory_mb"}
    assert set(raw_timings(measured_bench)) == set(measured_bench)


def test_models_without_timings_pass_through(predicted_report):
    models = models_for_report(predicted_report["models"])
    assert models == predicted_report["models"]


def test_predicted_vs_measured_reads_only_records_with_a_prediction(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    base = {"arch": {"family": "resnet"}, "input_shape": [1, 8, 8], "precision": "int8"}
    append_record("x86-cpu", {**base, "name": "a", "predicted_ms": 0.1, "measured_p50_ms": 0.12})
    append_record("x86-cpu", {**base, "name": "b", "predicted_ms": None, "measured_p50_ms": 0.2})
    append_record("x86-cpu", {**base, "name": "c", "precision": "fp32", "predicted_ms": 0.3, "measured_p50_ms": 0.3})
    records = predicted_vs_measured("x86-cpu", (1, 8, 8), "int8")
    assert [(r["name"], r["predicted_ms"], r["measured_p50_ms"]) for r in records] == [("a", 0.1, 0.12)]
    assert predicted_vs_measured("jetson-orin", (1, 8, 8), "int8") == []


def test_environment_says_where_the_power_mode_comes_from():
    assert environment_extras({"runtime_precision": "f32 hint"})["precision_hint"] == "f32 hint"
    assert environment_extras({})["power_mode"] == "n/a (not a Jetson)"
    expected = environment_extras({"power_mode_expected": "MAXN"})["power_mode"]
    assert "MAXN" in expected and "not read from a device" in expected
    read = environment_extras({"nvpmodel_mode": "MAXN", "jetson_clocks": "on"})["power_mode"]
    assert read == "MAXN (nvpmodel), jetson_clocks on"
    assert environment_extras({})["gpu"]  # a name, or "none (...)" saying why
