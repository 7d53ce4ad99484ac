"""A MobileNetV2/V3-style family (inverted residual blocks, optional squeeze-excitation).

Depthwise-separable blocks are what edge runtimes are tuned for, so this is the family search
explores for small students; the record gives per-stage width, depth, stride, kernel,
expansion and SE, which covers MobileNetV2 and the non-hard-swish part of MobileNetV3.
ReLU6 and Hardsigmoid are used because they export to ONNX/OpenVINO and quantize with NNCF
without custom ops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

STAGE_KEYS = ("width", "depth", "stride", "kernel", "expand", "se")


def conv_bn_act(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def se_channels(channels: int) -> int:
    """Squeeze width: a quarter of the block's channels, at least 8, rounded up to a multiple
    of 8 so the two 1x1 convs stay on fast channel counts."""
    return 8 * math.ceil(max(8, channels // 4) / 8)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = se_channels(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand -> kxk depthwise -> optional SE -> 1x1 linear projection, with a residual
    add when the block keeps the shape (stride 1 and in == out)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel: int, expand: int, se: bool):
        super().__init__()
        if kernel % 2 != 1:
            # An even kernel with padding k//2 changes the spatial size at stride 1.
            raise ValueError(f"kernel must be odd, got {kernel}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not isinstance(expand, int) or expand < 1:
            raise ValueError(f"expand must be a positive integer, got {expand!r}")
        hidden = in_ch * expand
        # expand == 1 has no expansion conv at all (MobileNetV2's first block), not an identity conv.
        self.expand: nn.Module = conv_bn_act(in_ch, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn_act(hidden, hidden, kernel, stride, groups=hidden)
        self.se: nn.Module = SqueezeExcite(hidden) if se else nn.Identity()
        self.project = conv_bn_act(hidden, out_ch, 1, act=False)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


def block_args(stem: int, stages: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Per stage, the InvertedResidual arguments of each of its blocks. One place for the
    stage->block rule, shared by the model and by the per-block layer plan."""
    in_ch = stem
    for index, stage in enumerate(stages):
        missing = [k for k in STAGE_KEYS if k not in stage]
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if missing or unknown:
            raise ValueError(
                f"stage {index} {stage}: missing keys {missing}, unknown keys {unknown}; "
                f"a stage has exactly {list(STAGE_KEYS)}"
            )
        if stage["depth"] < 1:
            raise ValueError(f"stage {index}: depth must be at least 1, got {stage['depth']}")
        blocks = []
        for block_index in range(stage["depth"]):
            blocks.append({
                "in_ch": in_ch,
                "out_ch": stage["width"],
                "stride": stage["stride"] if block_index == 0 else 1,
                "kernel": stage["kernel"],
                "expand": stage["expand"],
                "se": bool(stage["se"]),
            })
            in_ch = stage["width"]
        yield blocks


class MobileNet(nn.Module):
    """stem conv, stages of inverted residual blocks, 1x1 head conv, global pool, classifier.
    Plain attributes at top level (not one nn.Sequential): NNCF needs a named module tree."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stem: int,
        stages: list[dict[str, Any]],
        head: int,
        stem_stride: int = 1,
    ):
        super().__init__()
        if not stages:
            raise ValueError("a mobilenet needs at least one stage")
        self.stem = conv_bn_act(in_channels, stem, 3, stem_stride)
        self.stages = nn.Sequential(*(
            nn.Sequential(*(InvertedResidual(**args) for args in blocks))
            for blocks in block_args(stem, stages)
        ))
        self.head = conv_bn_act(stages[-1]["width"], head, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
