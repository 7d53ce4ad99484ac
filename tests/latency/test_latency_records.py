"""Latency records: one JSON line per measurement, read back per input shape and precision."""

from __future__ import annotations

import json
import logging

import pytest

from edgekd.errors import UserError
from edgekd.latency.records import append_record, load_records, records_path, target_dir

ARCH = {"family": "resnet", "stem": 8, "widths": [8], "depths": [1]}


def record(p50: float, shape=(1, 8, 8), precision: str = "int8") -> dict:
    return {"arch": ARCH, "input_shape": list(shape), "precision": precision, "predicted_ms": None,
            "measured_p50_ms": p50, "measured_p90_ms": p50 * 1.1, "threads": 2,
            "runtime": "openvino 2026.4.1", "device": "AMD EPYC"}


@pytest.fixture(autouse=True)
def benchmarks_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    return tmp_path


def test_target_dir_follows_the_environment(benchmarks_dir, monkeypatch):
    assert target_dir("x86-cpu") == benchmarks_dir / "x86-cpu"
    monkeypatch.delenv("EDGEKD_BENCHMARKS_DIR")
    assert str(target_dir("x86-cpu")) == "benchmarks/x86-cpu"


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_a_target_name_cannot_escape_the_benchmarks_dir(name):
    with pytest.raises(UserError):
        target_dir(name)


def test_round_trip_filters_by_shape_and_precision():
    append_record("x86-cpu", record(0.10))
    append_record("x86-cpu", record(0.20, precision="fp32"))
    append_record("x86-cpu", record(0.30, shape=(3, 224, 224)))
    append_record("x86-cpu", record(0.40))
    got = load_records("x86-cpu", (1, 8, 8), "int8")
    assert [r["measured_p50_ms"] for r in got] == [0.10, 0.40]
    assert got[0]["arch"] == ARCH and got[0]["predicted_ms"] is None and "date" in got[0]
    assert load_records("x86-cpu", [3, 224, 224], "int8")[0]["measured_p50_ms"] == 0.30
    assert load_records("other-target", (1, 8, 8), "int8") == []


def test_append_refuses_a_record_without_a_measurement():
    bad = record(0.1)
    del bad["measured_p50_ms"]
    with pytest.raises(ValueError, match="measured_p50_ms"):
        append_record("x86-cpu", bad)


def test_corrupt_lines_are_skipped_with_one_warning(caplog):
    append_record("x86-cpu", record(0.10))
    path = records_path("x86-cpu")
    with open(path, "a") as handle:
        handle.write("not json\n")
        handle.write("[1, 2]\n")
        handle.write(json.dumps({"arch": ARCH}) + "\n")  # required keys missing
        handle.write(json.dumps(record(-1.0)) + "\n")  # not a latency
        handle.write(json.dumps(record(0.2))[:40])  # a kill mid-write: no newline
    append_record("x86-cpu", record(0.30))  # must start a new line, not extend the broken one
    with caplog.at_level(logging.WARNING):
        got = load_records("x86-cpu", (1, 8, 8), "int8")
    assert [r["measured_p50_ms"] for r in got] == [0.10, 0.30]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 5 unreadable line(s)" in warnings[0].getMessage()


def test_binary_garbage_does_not_crash():
    path = records_path("x86-cpu")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    append_record("x86-cpu", record(0.5))
    assert [r["measured_p50_ms"] for r in load_records("x86-cpu", (1, 8, 8), "int8")] == [0.5]
