"""nncf_int8.prepare_int8: NNCF's fast bias correction is off unless asked for, so PTQ leaves the
float model's biases as they were (benchmarks/nncf_bias_correction.py measured it costing PTQ
accuracy on trained models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

nncf_int8 = pytest.importorskip("edgekd.quantizers.nncf_int8", exc_type=ImportError)


class Net(nn.Module):
    # Not a bare nn.Sequential: NNCF adds a hook-storage child module, which a Sequential would
    # then call as a layer.
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def calib():
    return torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _biases(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith("bias")}


def test_biases_are_left_alone_by_default(net, calib):
    before = _biases(net)
    after = _biases(nncf_int8.prepare_int8(net, calib))
    assert before.keys() <= after.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_bias_correction_on_request_shifts_biases(net, calib):
    before = _biases(net)
    after = _biases(nncf_int8.prepare_int8(net, calib, bias_correction=True))
    assert any(not torch.equal(after[name], value) for name, value in before.items())
