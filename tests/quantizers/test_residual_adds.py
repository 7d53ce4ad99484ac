"""Which input of each residual add TensorRT wants quantized, found with torch.fx on real models."""

from __future__ import annotations

import torch
from residual_cnn import ResidualCNN
from torch import nn

from edgekd.models import build_model
from edgekd.quantizers import residual_adds


def _found(model: nn.Module) -> list[tuple[str, str, str]]:
    graph_module = residual_adds.trace(model)
    return [
        (found.add.name, found.residual.name, found.fused_layer)
        for found in residual_adds.find_residual_adds(graph_module)
    ]


def test_identity_skip_is_the_residual_and_the_conv_before_batch_norm_fuses():
    assert _found(ResidualCNN()) == [("add", "relu", "conv")]


def test_resnet_blocks_identity_and_projection_shortcuts():
    found = _found(build_model("resnet_xs", 1, 10))
    assert [residual for _, residual, _ in found] == [
        "stages_0_0_shortcut",  # nn.Identity
        "stages_1_0_shortcut_1",  # the projection's batch norm: the shorter branch
        "stages_2_0_shortcut_1",
    ]
    assert all(layer.endswith("conv2.0") for _, _, layer in found)


def test_mobilenet_inverted_residuals():
    found = _found(build_model("mobilenet_xs", 1, 10))
    assert found and all(layer.endswith("project.0") for _, _, layer in found)


class NotResidual(nn.Module):
    """Adds that TensorRT cannot fuse into a convolution: a bias and two equal-length branches."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.a(x) + self.b(x) + 1.0


def test_adds_that_are_not_residual_connections_are_left_alone():
    assert _found(NotResidual()) == []


class Untraceable(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent control flow


def test_untraceable_model_gives_none_and_a_warning(caplog):
    assert residual_adds.trace(Untraceable()) is None
    assert "cannot trace Untraceable" in caplog.text
    assert torch.equal(Untraceable()(torch.ones(1)), torch.ones(1))
