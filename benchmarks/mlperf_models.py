"""The MLPerf Inference edge vision models, built without torchvision, for the analytical latency
anchor (benchmarks/mlperf_anchor.py): ResNet-50 v1.5 and RetinaNet (ResNeXt50-32x4d + FPN, 800x800).

Layouts follow torchvision's (`torchvision.models.resnet50`, `retinanet_resnext50_32x4d_fpn` as
MLPerf uses them) so the layer shapes, and therefore MACs and bytes, are those of the benchmarked
networks: ResNet-50 has 25,557,032 parameters and 4.09 GMACs at 224x224, the same as torchvision's.
torchvision itself does not import beside the CPU torch build here (operator torchvision::nms is
missing). Weights are
random: the analytical predictor needs shapes, not trained values.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here: ResNet v1.5), 1x1 expand x4, residual; `groups` and
    `base_width` give ResNeXt (32x4d: groups=32, base_width=4)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """torchvision's ResNet body: 7x7/2 stem, 3x3/2 max pool, four bottleneck stages [3, 4, 6, 3]."""

    def __init__(self, groups: int = 1, base_width: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        stages = []
        for index, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for block in range(depth):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(Bottleneck(in_ch, planes, stride, groups, base_width))
                in_ch = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = in_ch

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """C2..C5: the outputs of the four stages."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.body = ResNetBackbone()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.body.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.body.features(x)[-1]), 1))


class RetinaNet(nn.Module):
    """MLPerf's RetinaNet without its box decoding and NMS (post-processing, not layers): a
    ResNeXt50-32x4d backbone, an FPN on C3..C5 with P6/P7 from P5 (torchvision's
    LastLevelP6P7(256, 256)), and the shared classification and box heads (four 3x3x256 convs
    each, then 9 anchors x 264 classes and 9 x 4 box outputs) run on every level P3..P7."""

    def __init__(self, num_classes: int = 264, anchors: int = 9, channels: int = 256):
        super().__init__()
        self.body = ResNetBackbone(groups=32, base_width=4)
        self.inner = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in (512, 1024, 2048))
        self.layer = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3))
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.cls_tower = self._tower(channels)
        self.cls_logits = nn.Conv2d(channels, anchors * num_classes, 3, padding=1)
        self.box_tower = self._tower(channels)
        self.bbox_reg = nn.Conv2d(channels, anchors * 4, 3, padding=1)

    @staticmethod
    def _tower(channels: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3, c4, c5 = self.body.features(x)[1:]
        last = self.inner[2](c5)
        p5 = self.layer[2](last)
        merged = self.inner[1](c4) + nn.functional.interpolate(last, size=c4.shape[-2:], mode="nearest")
        p4 = self.layer[1](merged)
        merged = self.inner[0](c3) + nn.functional.interpolate(merged, size=c3.shape[-2:], mode="nearest")
        p3 = self.layer[0](merged)
        p6 = self.p6(p5)
        p7 = self.p7(nn.functional.relu(p6))
        outputs = []
        for level in (p3, p4, p5, p6, p7):
            outputs.append(self.cls_logits(self.cls_tower(level)))
            outputs.append(self.bbox_reg(self.box_tower(level)))
        return outputs


def resnet50(num_classes: int = 1000) -> nn.Module:
    return ResNet50(num_classes).eval()


def retinanet_resnext50_fpn(num_classes: int = 264) -> nn.Module:
    return RetinaNet(num_classes).eval()
