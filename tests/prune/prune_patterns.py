"""Tiny real models of each block pattern structured pruning must handle, and a user's own
architecture that pruning must not crash on. Importable by name so a test can pickle them whole."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models import build_model

RESNET = {"family": "resnet", "stem": 16, "widths": [16, 32], "depths": [1, 1]}  # residual adds
MOBILENET = {  # inverted residuals: 1x1 expand, depthwise, squeeze-excitation, residual add
    "family": "mobilenet", "stem": 16, "stem_stride": 1, "head": 32,
    "stages": [{"width": 16, "depth": 2, "stride": 1, "kernel": 3, "expand": 2, "se": True},
               {"width": 24, "depth": 1, "stride": 2, "kernel": 3, "expand": 2, "se": False}],
}


class ConcatNet(nn.Module):
    """Two branches concatenated along channels (Inception / DenseNet style)."""

    def __init__(self):
        super().__init__()
        self.left = nn.Conv2d(1, 16, 3, padding=1)
        self.right = nn.Conv2d(1, 24, 1)
        self.mix = nn.Conv2d(40, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.fc(torch.relu(self.mix(x)).mean(dim=(2, 3)))


class GroupedNet(nn.Module):
    """A grouped convolution (ResNeXt style) between two dense ones."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.out = nn.Conv2d(64, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(self.grouped(x)))
        return self.fc(torch.relu(self.out(x)).mean(dim=(2, 3)))


class UserNet(nn.Module):
    """A user's own architecture: a residual block written inline, a learnable per-channel scale
    held as a bare nn.Parameter, a flatten into the classifier, and a layer used only in training."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 24, 3, padding=1)
        self.conv_b = nn.Conv2d(24, 24, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 24, 1, 1))
        self.conv_c = nn.Conv2d(24, 32, 3, stride=2, padding=1)
        self.aux = nn.Linear(24, 10)  # an auxiliary head, only called in training
        self.fc = nn.Linear(32 * 8 * 8, 10)  # a 16x16 input, halved by conv_c

    def forward(self, x):
        a = torch.relu(self.conv_a(x))
        a = torch.relu(a + self.scale * self.conv_b(a))
        if self.training and self.aux is not None:
            _ = self.aux(a.mean(dim=(2, 3)))
        return self.fc(torch.flatten(torch.relu(self.conv_c(a)), 1))


class HardCodedWidth(nn.Module):
    """A forward pass that hard-codes a channel count: pruning the layer before it breaks it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)).view(-1, 32))


def pattern_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "residual": build_model(RESNET, 1, 10),
        "inverted_residual_se": build_model(MOBILENET, 1, 10),
        "concat": ConcatNet(),
        "grouped": GroupedNet(),
        "user": UserNet(),
    }


def randomise_batch_norm_(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so that exported artifacts are compared on real math."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()
