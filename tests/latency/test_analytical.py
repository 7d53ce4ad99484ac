"""Analytical (roofline) latency on a device that is not attached: behaviour on tiny real models
and the real target files."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.latency.analytical import (
    AnalyticalEstimate,
    calibrated_factor,
    predict_latency_ms,
    profile_layers,
)
from edgekd.latency.records import append_record
from edgekd.models import build_model, count_macs, resolve_arch
from edgekd.target import load_target


@pytest.fixture(autouse=True)
def benchmarks_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def orin():
    return load_target("jetson-orin")


def conv(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())


def with_peaks(target, **peaks):
    return dataclasses.replace(target, peaks=dataclasses.replace(target.peaks, **peaks))


def test_the_estimate_is_labelled_predicted_with_its_source(orin):
    estimate = predict_latency_ms(conv(16), (16, 8, 8), orin, "int8")
    assert isinstance(estimate, AnalyticalEstimate)
    assert estimate.label.startswith("predicted (analytical: ")
    assert "Jetson AGX Orin" in estimate.label
    data = estimate.to_dict()
    assert data["label"] == estimate.label
    assert data["total_ms"] == pytest.approx(sum(layer["ms"] for layer in data["layers"]))
    assert [layer["kind"] for layer in data["layers"]] == ["conv"]  # batch norm and ReLU are fused


def test_doubling_width_roughly_quadruples_a_compute_bound_layer(orin):
    narrow = predict_latency_ms(conv(256), (256, 56, 56), orin, "int8")
    wide = predict_latency_ms(conv(512), (512, 56, 56), orin, "int8")
    assert narrow.layers[0].bound == wide.layers[0].bound == "compute"
    assert wide.layers[0].compute_ms == pytest.approx(4 * narrow.layers[0].compute_ms)
    assert 3.3 < wide.total_ms / narrow.total_ms < 4.0  # the fixed per-layer cost does not grow


def test_a_memory_bound_layer_follows_bandwidth(orin):
    # A batch-1 linear reads each weight once for two ops: far below the ridge point.
    model = nn.Linear(2048, 2048)
    slow = predict_latency_ms(model, (2048,), orin, "fp16")
    fast = predict_latency_ms(model, (2048,), with_peaks(orin, memory_bandwidth_gbs=2 * orin.peaks.memory_bandwidth_gbs), "fp16")
    layer = slow.layers[0]
    assert layer.bound == "memory"
    assert layer.bytes == 2 * (2048 * 2048 + 2048 + 2048 + 2048)  # weights, bias, input, output at 2 bytes
    assert layer.memory_ms == pytest.approx(layer.bytes / (orin.peaks.memory_bandwidth_gbs * 1e6))
    assert fast.layers[0].memory_ms == pytest.approx(layer.memory_ms / 2)
    # and more compute does not help it
    more_compute = predict_latency_ms(model, (2048,), with_peaks(orin, fp16_tflops=10 * orin.peaks.fp16_tflops), "fp16")
    assert more_compute.total_ms == pytest.approx(slow.total_ms)


def test_int8_is_faster_than_fp16_and_fp32_when_compute_bound(orin):
    times = {p: predict_latency_ms(conv(256), (256, 56, 56), orin, p).total_ms for p in ("int8", "fp16", "fp32")}
    assert times["int8"] < times["fp16"] < times["fp32"]


def test_the_target_precision_is_the_default(orin):
    assert predict_latency_ms(conv(8), (8, 8, 8), orin).precision == orin.precision == "int8"


def test_null_peaks_name_the_target_file_and_the_keys_to_fill():
    target = load_target("nvidia-gpu")
    with pytest.raises(UserError) as error:
        predict_latency_ms(conv(8), (8, 8, 8), target, "int8")
    message = str(error.value)
    assert "nvidia-gpu.yaml" in message
    assert "peaks.int8_tops" in message and "peaks.memory_bandwidth_gbs" in message


def test_a_precision_without_a_published_peak_is_refused_not_guessed():
    target = load_target("apple-m")  # Apple publishes the Neural Engine's TOPS, no FP32 figure
    assert predict_latency_ms(conv(8), (8, 8, 8), target, "int8").total_ms > 0
    with pytest.raises(UserError, match="fp32_tflops"):
        predict_latency_ms(conv(8), (8, 8, 8), target, "fp32")
    with pytest.raises(UserError, match="precision"):
        predict_latency_ms(conv(8), (8, 8, 8), target, "int4")


@pytest.mark.parametrize("arch", ["resnet_s", "mobilenet_s"])
def test_layer_macs_add_up_to_count_macs(arch):
    model = build_model(arch, 3, 10)
    layers = profile_layers(model, (3, 32, 32))
    macs = sum(layer.ops for layer in layers if layer.kind in ("conv", "linear")) // 2
    assert macs == count_macs(model, (3, 32, 32))


def test_residual_adds_are_fused_and_squeeze_excite_multiplies_are_not():
    resnet = profile_layers(build_model("resnet_s", 3, 10), (3, 16, 16))
    adds = [layer for layer in resnet if layer.kind == "add"]
    assert adds and not any(layer.fixed_cost for layer in adds)
    mobilenet = profile_layers(build_model("mobilenet_s", 3, 10), (3, 16, 16))
    assert any(layer.kind == "mul" and layer.fixed_cost for layer in mobilenet)


def test_a_model_on_the_meta_device_profiles_like_a_real_one():
    real = profile_layers(build_model("resnet_s", 3, 10), (3, 16, 16))
    with torch.device("meta"):
        meta_model = build_model("resnet_s", 3, 10)
    assert profile_layers(meta_model, (3, 16, 16)) == real


def test_the_model_is_left_in_training_mode_and_unhooked(orin):
    model = conv(8).train()
    predict_latency_ms(model, (8, 8, 8), orin)
    assert model.training
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_calibrated_factor_is_the_geometric_mean_of_measured_over_predicted(orin):
    shape = (3, 32, 32)
    assert calibrated_factor("jetson-orin", shape, "int8") is None  # no records yet
    for arch, ratio in (("resnet_xs", 2.0), ("resnet_s", 0.5), ("mobilenet_xs", 1.0)):
        predicted = predict_latency_ms(build_model(arch, 3, 10), shape, orin, "int8").total_ms
        append_record("jetson-orin", {"arch": resolve_arch(arch), "input_shape": list(shape), "precision": "int8",
                                      "num_classes": 10, "measured_p50_ms": ratio * predicted})
    append_record("jetson-orin", {"arch": resolve_arch("resnet_s"), "input_shape": list(shape), "precision": "fp16",
                                  "num_classes": 10, "measured_p50_ms": 100.0})  # another precision: ignored
    factor, used = calibrated_factor("jetson-orin", shape, "int8")
    assert used == 3
    assert factor == pytest.approx(math.exp((math.log(2.0) + math.log(0.5) + math.log(1.0)) / 3))


def test_calibrated_factor_skips_records_it_cannot_rebuild(orin, caplog):
    shape = (3, 16, 16)
    predicted = predict_latency_ms(build_model("resnet_xs", 3, 10), shape, orin, "int8").total_ms
    append_record("jetson-orin", {"arch": resolve_arch("resnet_xs"), "input_shape": list(shape), "precision": "int8",
                                  "num_classes": 10, "measured_p50_ms": 3 * predicted})
    append_record("jetson-orin", {"arch": {"family": "nonsense"}, "input_shape": list(shape), "precision": "int8",
                                  "num_classes": 10, "measured_p50_ms": 1.0})
    append_record("jetson-orin", {"arch": resolve_arch("resnet_xs"), "input_shape": list(shape), "precision": "int8",
                                  "measured_p50_ms": 1.0})  # no num_classes
    factor, used = calibrated_factor("jetson-orin", shape, "int8")
    assert (round(factor, 6), used) == (3.0, 1)
    assert "skipped" in caplog.text


def test_calibrated_factor_needs_the_target_peaks():
    append_record("nvidia-gpu", {"arch": resolve_arch("resnet_xs"), "input_shape": [3, 8, 8], "precision": "int8",
                                 "num_classes": 10, "measured_p50_ms": 1.0})
    with pytest.raises(UserError, match="nvidia-gpu.yaml"):
        calibrated_factor("nvidia-gpu", (3, 8, 8), "int8")
