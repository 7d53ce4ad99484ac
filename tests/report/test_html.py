"""report.html from report dicts of real measurements: what a product team must find on the page,
every predicted latency labelled, nothing fetched from outside the file."""

from __future__ import annotations

import copy
import re

from edgekd.report.fields import raw_timings
from edgekd.report.html import render_html


def test_a_measured_run_shows_every_section_with_its_numbers(measured_report, measured_bench):
    page = render_html(measured_report, timings_ms=raw_timings(measured_bench))
    for heading in ("Per stage", "Student search", "Attempts of the feedback loop", "Latency distribution",
                    "Per-layer latency and execution precision", "First load and peak memory",
                    "Predicted vs measured", "Environment", "Reproduce"):
        assert heading in page
    # one inline SVG per plot: Pareto, histogram, a per-layer chart per model, predicted vs measured
    assert page.count("<svg") == 6
    int8 = measured_report["models"]["student_int8"]
    assert f"{int8['latency_ms']['p50']:.4f}" in page
    assert f"{int8['load_ms']:.1f}" in page and f"{int8['peak_memory_mb']:.1f}" in page
    assert "edgekd compress --target x86-cpu --budget-ms 1.0" in page
    assert "PREDICTED" in page  # the predicted-vs-measured records' predictions, labelled
    assert "ran in INT8" in page and "ran in FP32" in page  # the per-layer charts' legends


def test_the_int8_students_compute_layers_ran_int8_and_a_fallback_would_be_named(measured_report):
    layers = measured_report["models"]["student_int8"]["per_layer"]
    assert layers["compute_int8"] and not layers["compute_float"]  # NNCF's INT8 IR runs its convs in INT8
    report = copy.deepcopy(measured_report)
    report["models"]["student_int8"]["per_layer"]["compute_float"] = ["conv_that_fell_back"]
    page = render_html(report)
    assert "did not run in INT8" in page and "conv_that_fell_back" in page and "fell back" in page


def test_a_predicted_run_labels_every_latency_and_says_why_there_is_no_histogram(predicted_report):
    page = render_html(predicted_report)
    assert "marked PREDICTED were not measured" in page and "TensorRT is not installed here" in page
    # every model row carries the PREDICTED badge, and none says measured
    assert page.count('class="badge predicted"') >= 3 + 1  # three rows + the headline
    assert 'class="badge measured"' not in page
    assert "the latencies of this run are PREDICTED" in page
    assert "no TensorRT engine was built here" in page  # why there are no per-layer counters
    assert "front, latency PREDICTED" in page  # the Pareto plot's legend (SVG text)


def test_user_text_is_escaped_and_the_page_loads_nothing_from_outside(measured_report, measured_bench):
    page = render_html(measured_report, timings_ms=raw_timings(measured_bench))
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<link" not in page and "<img" not in page and "@import" not in page
    assert all(target.startswith("#") for target in re.findall(r"url\(([^)]*)\)", page))  # SVG clip paths only
    # The only URLs are XML namespace names inside the SVGs, which a browser does not fetch.
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert not attribute.startswith(("http:", "https:", "//")), attribute


def test_rolled_back_stages_and_models_are_marked_with_their_reason(measured_report):
    report = copy.deepcopy(measured_report)
    report["models"]["student_int8"]["rolled_back"] = "INT8 was not faster than fp32 on this device"
    report["stages"]["distill"]["rolled_back"] = "pruning cost 2 points for no latency gain"
    page = render_html(report)
    assert page.count("ROLLED BACK") == 2
    assert "INT8 was not faster than fp32 on this device" in page and "pruning cost 2 points" in page


def test_findings_from_the_markdown_report_are_kept(measured_report):
    page = render_html(measured_report, findings=["- **Budget missed**: the student `x` measures 2 ms.", ""])
    assert "<strong>Budget missed</strong>: the student <code>x</code> measures 2 ms." in page


def test_key_numbers_carry_their_report_json_path(measured_report):
    page = render_html(measured_report)
    keys = set(re.findall(r'data-key="([^"]+)"', page))
    assert {"budget_ms", "speedup_p50", "models.student_int8.accuracy", "models.student_int8.latency_ms.p50",
            "models.teacher.latency_ms.p99", "models.student_int8.load_ms",
            "models.student_int8.peak_memory_mb"} <= keys
