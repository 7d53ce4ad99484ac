"""Where a target's artifacts can be timed, and the prediction used where they cannot."""

from __future__ import annotations

import dataclasses
import platform

import pytest

from edgekd.errors import UserError
from edgekd.latency.predicted import check_predictable, predicted_latency
from edgekd.models import build_model
from edgekd.target import baseline_precision, load_target, why_not_measurable


def test_x86_cpu_is_measurable_here_and_ships_its_baseline_in_fp32():
    target = load_target("x86-cpu")
    assert why_not_measurable(target) is None
    assert baseline_precision(target) == "fp32"
    check_predictable(target)  # nothing to predict: no peaks needed


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_apple_m_is_not_measurable_off_macos_and_its_baseline_is_fp16():
    target = load_target("apple-m")
    assert "macOS" in why_not_measurable(target)
    assert baseline_precision(target) == "fp16"


def test_a_remote_runner_makes_any_target_measurable():
    target = dataclasses.replace(load_target("jetson-orin"), runner="ssh://nvidia@jetson.lan")
    assert why_not_measurable(target) is None


def test_a_target_that_cannot_be_measured_needs_its_peak_figures():
    target = load_target("nvidia-gpu")
    if why_not_measurable(target) is None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(UserError, match="peaks.int8_tops"):
        check_predictable(target)


def test_predicted_latency_is_labelled_and_grows_with_the_model():
    target = load_target("jetson-orin")
    small = build_model("resnet_xs", 3, 10).eval()
    large = build_model("resnet_l", 3, 10).eval()
    fast = predicted_latency(target, small, (3, 224, 224), "int8")
    slow = predicted_latency(target, large, (3, 224, 224), "int8")
    assert fast.source == slow.source == "predicted (analytical)" and "peaks" in fast.detail
    assert 0 < fast.ms < slow.ms
    assert predicted_latency(target, large, (3, 224, 224), "fp16").ms > slow.ms  # int8 is the faster precision
