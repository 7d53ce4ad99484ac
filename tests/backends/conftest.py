"""Fixtures shared by the backend tests: a tiny real CNN and sample inputs."""

from __future__ import annotations

import pytest
import torch
from tiny_cnn import TinyCNN


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def samples():
    torch.manual_seed(1)
    return torch.rand(64, 1, 8, 8)
