"""The report's plots: inline SVG with text kept as text, a predicted latency labelled in the plot."""

from __future__ import annotations

from edgekd.report import plots


def test_pareto_marks_predicted_points_the_choice_and_the_budget():
    front = [{"name": "a", "score": 10.0, "latency_ms": 0.2, "latency_source": "predicted (table)"},
             {"name": "b", "score": 5.0, "latency_ms": 0.1, "latency_source": "measured"}]
    svg = plots.pareto_svg(front, chosen="a", budget_ms=0.25, score_name="params",
                           finalists=[{"name": "a", "measured_ms": 0.22, "latency_source": "predicted (table)"}])
    assert svg.startswith("<svg") and "<?xml" not in svg and "DOCTYPE" not in svg
    for text in ("front, latency PREDICTED", "front, latency measured", "chosen: a", "budget 0.2500 ms",
                 "finalist, measured"):
        assert text in svg
    assert plots.pareto_svg([], chosen=None, budget_ms=None, score_name="params") is None


def test_two_plots_on_one_page_share_no_element_id():
    import re

    first = plots.histogram_svg({"a": [0.1, 0.2, 0.15]})
    second = plots.predicted_vs_measured_svg([{"predicted_ms": 0.1, "measured_p50_ms": 0.12}])
    def ids(svg: str) -> set[str]:
        return set(re.findall(r'id="([^"]+)"', svg))

    assert ids(first) and ids(second) and not ids(first) & ids(second)
    for svg in (first, second):  # every reference still points at an id of its own plot
        assert set(re.findall(r'(?:href="#|url\(#)([^")]+)', svg)) <= ids(svg)


def test_histogram_counts_the_off_scale_calls_and_needs_samples():
    svg = plots.histogram_svg({"teacher": [0.1] * 1000 + [5.0] * 3})
    assert "teacher: p50 0.1000 ms" in svg and "1003 calls; 3 slower calls in the last bin" in svg
    assert plots.histogram_svg({"teacher": []}) is None


def test_layers_are_coloured_by_the_precision_they_ran_in():
    layers = [{"name": "conv", "origin": "stages.0.conv", "median_ms": 0.02, "precision": "INT8"},
              {"name": "fq", "median_ms": 0.01, "precision": "FP32"}]
    svg = plots.layers_svg(layers, title="student")
    assert "ran in INT8" in svg and "ran in FP32" in svg and "stages.0.conv" in svg
    assert plots.layers_svg([], title="x") is None


def test_accuracy_latency_labels_each_predicted_point():
    points = [{"run": "x86", "model": "student INT8", "latency_ms": 0.1, "accuracy": 0.99, "latency_source": "measured"},
              {"run": "orin", "model": "student INT8", "latency_ms": 0.05, "accuracy": 0.98,
               "latency_source": "predicted (analytical)"}]
    svg = plots.accuracy_latency_svg(points, title="t")
    assert "x86: latency measured" in svg and "orin: latency PREDICTED" in svg and "student INT8 (predicted)" in svg
