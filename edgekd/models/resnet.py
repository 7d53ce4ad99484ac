"""A small ResNet family (basic blocks) for images of any size, used for teachers and students.

Defined here instead of imported from torchvision: torchvision's wheel from the package index
does not import beside the CPU torch build edgekd installs (`RuntimeError: operator
torchvision::nms does not exist`), and a family we own is one we can search.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_ch, out_ch, stride)
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def resnet_stem(in_ch: int, out_ch: int, stride: int = 1, pool: bool = False) -> nn.Sequential:
    """3x3 conv-BN-ReLU at `stride`; with `pool`, ResNet's 3x3 stride-2 max pool after it. At
    224x224 (stride 2 and the pool) the first stage sees 56x56, as in torchvision's ResNets."""
    layers = list(_conv_bn_relu(in_ch, out_ch, stride))
    if pool:
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """stem conv (stride 1 for small images; stride 2 and a max pool at 224), then one stage per
    width (the first at stride 1, the rest at stride 2), then global average pooling and a linear
    classifier. Global pooling makes it input-size agnostic."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stem: int,
        widths: list[int],
        depths: list[int],
        stem_stride: int = 1,
        stem_pool: bool = False,
    ):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {widths} and depths {depths} must have the same length")
        self.stem = resnet_stem(in_channels, stem, stem_stride, stem_pool)
        stages: list[nn.Module] = []
        in_ch = stem
        for index, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
