"""Per-layer sensitivity and PTQ with exclusions, on a small CNN trained on the real digits.

The CNN's head is made fragile on purpose, without changing what the float model computes: one
conv channel is dead from the start (weights 0, bias -1: always 0 after the ReLU, so it never
learns) and after training the head's weights on that channel are set to 1000. Per-channel INT8
then scales every row of the head to 1000, so its real weights (|w| < 1) round to 0 and the INT8
model guesses; keeping the head in float repairs it. So the right answer is known: the head is by
far the most sensitive layer.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.config import BenchConfig
from edgekd.data import load_dataset
from edgekd.data.calibration import load_calibration
from edgekd.errors import UserError
from edgekd.quantizers.sensitivity import (
    LayerSensitivity,
    choose_exclusions,
    layer_sensitivity,
    ptq_with_sensitivity,
)
from edgekd.target import load_target
from edgekd.training import evaluate_accuracy

pytest.importorskip("nncf", reason="nncf is not installed (pip install 'edgekd[openvino]')")
from edgekd.quantizers import nncf_int8  # noqa: E402 - after the skip: it imports nncf

SAMPLE = Path(__file__).resolve().parents[2] / "calibration" / "samples" / "digits-20" / "manifest.yaml"
DEAD = 31  # the dead channel


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None, seed=0)


@pytest.fixture(scope="module")
def fragile_net(digits, one_torch_thread):
    torch.manual_seed(0)
    model = DigitNet()
    with torch.no_grad():
        model.conv2.weight[DEAD] = 0.0
        model.conv2.bias[DEAD] = -1.0  # ReLU(-1) = 0 for every input, and no gradient flows back
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(10):  # ~2 s; ~90% val accuracy
        for x, y, _ in digits.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    with torch.no_grad():
        model.fc.weight[:, DEAD] = 1000.0  # multiplies 0 in float; sets the INT8 scale of every row
    return model.eval()


@pytest.fixture(scope="module")
def calibration():
    return load_calibration(SAMPLE, (1, 8, 8))


@pytest.fixture(scope="module")
def sensitivities(fragile_net, calibration, digits):
    return layer_sensitivity(fragile_net, nncf_int8, calibration, digits.val)


def test_the_fragile_head_is_found_first_and_the_list_is_sorted(fragile_net, digits, sensitivities):
    assert evaluate_accuracy(fragile_net, digits.val) > 0.8
    assert sensitivities[0].layer == "fc"
    assert {s.layer for s in sensitivities} == {"conv1", "conv2", "fc"}  # every conv/linear by default
    head = sensitivities[0]
    assert head.cost_pt > 50  # INT8 guesses (~10%), float head recovers the float accuracy
    assert head.output_error < min(s.output_error for s in sensitivities[1:])
    keys = [(-s.cost_pt, s.output_error) for s in sensitivities]
    assert keys == sorted(keys)
    for s in sensitivities:  # cost is this layer's accuracy over the all-INT8 accuracy, in points
        assert 0.0 <= s.accuracy <= 1.0 and math.isfinite(s.output_error)
    baseline = head.accuracy - head.cost_pt / 100
    assert all(math.isclose(s.accuracy - s.cost_pt / 100, baseline, abs_tol=1e-9) for s in sensitivities)


def test_choose_exclusions_takes_layers_strictly_over_the_threshold():
    ranked = [LayerSensitivity("a", 0.9, 0.5, 0.1), LayerSensitivity("b", 0.95, 5.0, 0.2),
              LayerSensitivity("c", 0.93, 2.0, 0.3), LayerSensitivity("d", 0.93, 2.0, 0.05)]
    assert choose_exclusions(ranked, 1.0) == ["b", "d", "c"]  # most costly first, ties by output error
    assert choose_exclusions(ranked, 2.0) == ["b"]  # equal to the threshold is not over it
    assert choose_exclusions(ranked, 0.0) == ["b", "d", "c", "a"]
    assert choose_exclusions(ranked, 10.0) == []
    with pytest.raises(UserError, match="threshold must be >= 0"):
        choose_exclusions(ranked, -1.0)


def test_unknown_layer_is_a_user_error(fragile_net, calibration, digits):
    with pytest.raises(UserError, match=r"'fc1' \(close: fc"):
        layer_sensitivity(fragile_net, nncf_int8, calibration, digits.val, layers=["fc1"])


def test_ptq_keeps_the_head_float_and_times_it_on_openvino(fragile_net, calibration, digits, tmp_path):
    target = dataclasses.replace(load_target("x86-cpu"), bench=BenchConfig(warmup=5, runs=40))
    model, report = ptq_with_sensitivity(fragile_net, calibration, digits.val, target=target, threshold_pt=1.0,
                                         layers=["conv2", "fc"], rounds=2, workdir=tmp_path)
    assert report["excluded"] == ["fc"]
    assert report["final_accuracy"] > report["int8_accuracy"] + 0.5
    assert [row["layer"] for row in report["layers"] if row["excluded"]] == ["fc"]
    # the returned model really has no weight quantizer on the head, and still one on conv2
    from nncf.torch import get_config

    hooks = [h for entry in get_config(model)["compression_state"] for h in entry["hook_names_in_model"]]
    assert not [h for h in hooks if h.startswith("pre_hooks.fc/")]
    assert "pre_hooks.conv2/conv2d/0__1.0" in hooks

    latency = report["latency"]
    assert latency["status"] == "measured" and latency["backend"] == "openvino"
    assert set(latency["p50_ms"]) == {"float", "int8", "int8_final"}
    assert all(len(values) == 2 and min(values) > 0 for values in latency["rounds_p50_ms"].values())
    cost = latency["exclusions"]["fc"]
    assert cost["p50_ms"] == latency["p50_ms"]["int8_final"] and math.isfinite(cost["cost_ms"])
    # the deployed IR agrees with the torch model it came from (INT8 kernels round a little differently)
    assert abs(latency["final_artifact_accuracy"] - report["final_accuracy"]) < 0.03
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin"] * 3 + [".xml"] * 3


def test_latency_not_measurable_here_is_labelled(fragile_net, calibration):
    from edgekd.quantizers.exclusion_latency import measure_exclusion_latency

    coreml_target = dataclasses.replace(load_target("x86-cpu"), backend="coreml")
    report = measure_exclusion_latency(fragile_net, nncf_int8, calibration, ["fc"], target=coreml_target,
                                       quantized=fragile_net, final=fragile_net)
    assert report["status"].startswith("not measured (") and "macOS" in report["status"]
    assert report["exclusions"] == {"fc": report["status"]}


@pytest.mark.parametrize("target_name", [
    "apple-m",  # coremltools W8A8; Core ML runs only on macOS
    pytest.param("jetson-orin", marks=pytest.mark.slow),  # ModelOpt Q/DQ; TensorRT is not here (import ~15 s)
])
def test_other_targets_quantizers_find_the_head_and_label_latency(target_name, fragile_net, calibration, digits):
    target = load_target(target_name)
    pytest.importorskip({"coreml": "coremltools", "modelopt": "modelopt.torch.quantization"}[target.quantizer])
    _, report = ptq_with_sensitivity(fragile_net, calibration, digits.val, target=target, threshold_pt=1.0,
                                     layers=["conv2", "fc"])
    assert report["excluded"] == ["fc"]
    assert report["final_accuracy"] > report["int8_accuracy"] + 0.5
    assert report["latency"]["status"].startswith("not measured (")
