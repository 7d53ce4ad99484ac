"""Parameter and MAC counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.models import build_model, count_macs, count_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_count_params_is_sum_of_numel():
    for name in ("resnet_xs", "resnet_s"):
        model = build_model(name, 3, 7)
        assert count_params(model) == sum(p.numel() for p in model.parameters())
    assert count_params(nn.Linear(5, 3)) == 5 * 3 + 3
    assert count_params(nn.Conv2d(2, 4, 3, bias=False)) == 2 * 4 * 9


def test_count_macs_single_conv():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1)
    # out 8 x 16 x 16, each output does 3 * 3 * 3 multiply-adds
    assert count_macs(conv, (3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3
    strided = nn.Conv2d(4, 6, kernel_size=(3, 5), stride=2, padding=0)
    out_h, out_w = (11 - 3) // 2 + 1, (13 - 5) // 2 + 1
    assert count_macs(strided, (4, 11, 13)) == 6 * out_h * out_w * 4 * 3 * 5


def test_count_macs_grouped_conv():
    depthwise = nn.Conv2d(4, 4, kernel_size=3, padding=1, groups=4)
    assert count_macs(depthwise, (4, 8, 8)) == 4 * 8 * 8 * 1 * 9
    grouped = nn.Conv2d(4, 8, kernel_size=1, groups=2)
    assert count_macs(grouped, (4, 5, 5)) == 8 * 5 * 5 * 2


def test_count_macs_single_linear():
    assert count_macs(nn.Linear(20, 7), (20,)) == 20 * 7


def test_count_macs_sequential_sums_layers_and_ignores_others():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )
    assert count_macs(model, (1, 4, 4)) == 2 * 4 * 4 * 9 + 32 * 3


def test_count_macs_resnet_positive_grows_with_input_and_keeps_mode():
    model = build_model("resnet_xs", 1, 10)
    model.train()
    small = count_macs(model, (1, 8, 8))
    large = count_macs(model, (1, 16, 16))
    assert small > 0
    assert large > small
    assert model.training  # mode restored
    # hooks removed: a second count gives the same number
    assert count_macs(model, (1, 8, 8)) == small
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    count_macs(model, (1, 8, 8))
    assert not model.training


def test_count_macs_torchscript_is_none():
    model = build_model("resnet_xs", 1, 10).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 1, 8, 8))
    assert count_macs(traced, (1, 8, 8)) is None
    traced_linear = torch.jit.trace(nn.Linear(3, 2), torch.zeros(1, 3))
    assert count_macs(traced_linear, (3,)) is None
