"""The embedded default at its real settings (what `make compress` runs): minutes, so marked slow.
Checks what the README promises of it."""

from __future__ import annotations

import json

import pytest

from edgekd.cli import main


@pytest.mark.slow
def test_default_compress_meets_its_promises(tmp_path):
    assert main(["compress", "--target", "x86-cpu", "--runs-dir", str(tmp_path), "--name", "default"]) == 0
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    teacher, int8 = report["models"]["teacher"], report["models"]["student_int8"]
    assert int8["accuracy"] >= teacher["accuracy"] - 0.01
    assert int8["latency_ms"]["p50"] <= report["budget_ms"]
    assert teacher["latency_ms"]["p50"] / int8["latency_ms"]["p50"] >= 2.0
