"""The quantizer tests' model: a tiny residual CNN (residual_cnn.py, imported by the tests), and
the fixtures every quantizer's tests share: real digits and that CNN trained on them (once per
test module, so each quantizer starts from the same float model)."""

from __future__ import annotations

import pytest
from residual_cnn import digits, trained_model


@pytest.fixture(scope="module")
def data(one_torch_thread):
    return digits()


@pytest.fixture(scope="module")
def float_model(data):
    return trained_model(*data)
