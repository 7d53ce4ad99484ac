import time

import pytest

from edgekd.measure import LatencyStats, progress, time_calls


def test_time_calls_counts_warmup_and_runs():
    calls = []
    stats = time_calls(lambda: calls.append(1), warmup=3, runs=17, batch=4)
    assert len(calls) == 3 + 17
    assert (stats.runs, stats.warmup, stats.batch) == (17, 3, 4)


def test_percentiles_are_ordered_and_positive():
    stats = time_calls(lambda: time.sleep(0.0005), warmup=1, runs=30, desc="sleeping")
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.min_ms <= stats.mean_ms
    # sleep(0.5 ms) cannot return sooner than 0.5 ms
    assert stats.min_ms >= 0.5


def test_to_dict_keys_and_rounding():
    stats = LatencyStats(
        p50_ms=1.23456789,
        p90_ms=2.0,
        p99_ms=3.0,
        mean_ms=1.5,
        min_ms=1.0,
        runs=10,
        warmup=2,
        batch=1,
    )
    d = stats.to_dict()
    assert set(d) == {"p50", "p90", "p99", "mean", "min", "runs", "warmup", "batch"}
    assert d["p50"] == 1.2346
    assert (d["runs"], d["warmup"], d["batch"]) == (10, 2, 1)


def test_rejects_zero_runs():
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, runs=0)


def test_progress_yields_all_items():
    assert list(progress(range(5), desc="items")) == [0, 1, 2, 3, 4]


def test_time_calls_keeps_every_sample_and_to_dict_keeps_its_keys():
    from edgekd.measure import time_calls, timings_summary

    stats = time_calls(lambda: None, warmup=1, runs=25)
    assert len(stats.samples_ms) == 25 and min(stats.samples_ms) >= 0
    assert stats.min_ms == pytest.approx(min(stats.samples_ms), abs=1e-6)
    assert set(stats.to_dict()) == {"p50", "p90", "p99", "mean", "min", "runs", "warmup", "batch"}
    summary = timings_summary([1.0, 2.0, 3.0, 10.0])
    assert summary["count"] == 4 and summary["max"] == 10.0 and summary["p50"] == 2.5 and summary["std"] > 0
    with pytest.raises(ValueError):
        timings_summary([])
