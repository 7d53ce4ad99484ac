"""A model as an ordered list of block specs: the unit of a per-block latency table.

Latency of a candidate can be predicted by summing measured latencies of its blocks, so each
block is described by a JSON dict holding everything that decides its cost (kind, channels,
stride, kernel, expansion, SE, activation, input size). Equal specs are equal blocks in every
model of either family; `block_key` is the table's key. `build_block` makes the block from
the very classes the models use, so a timed block is exactly the one the model contains.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from edgekd.models.arch import resolve_arch
from edgekd.models.mobilenet import InvertedResidual, block_args, conv_bn_act
from edgekd.models.resnet import BasicBlock, resnet_stem

KINDS = ("stem", "resnet_basic", "inverted_residual", "head")


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _out_hw(hw: list[int], kernel: int, stride: int) -> list[int]:
    return [_conv_out(size, kernel, stride) for size in hw]


def layer_plan(
    record: dict[str, Any] | str, in_channels: int, num_classes: int, input_hw: tuple[int, int]
) -> list[dict[str, Any]]:
    """The model of `record` as an ordered list of block specs. Each spec is a JSON-serialisable
    dict with "kind" (one of KINDS), every argument build_block needs and "in_hw": [h, w], the
    spatial size of the block's input. Chaining build_block(spec) for every spec gives a model
    with the same layers, parameter count and MACs as build_model(record, in_channels,
    num_classes)."""
    record = resolve_arch(record)
    hw = [int(input_hw[0]), int(input_hw[1])]
    if record["family"] == "resnet":
        return _resnet_plan(record, in_channels, num_classes, hw)
    return _mobilenet_plan(record, in_channels, num_classes, hw)


def _resnet_plan(record, in_channels, num_classes, hw) -> list[dict[str, Any]]:
    if len(record["widths"]) != len(record["depths"]):
        raise ValueError(
            f"widths {record['widths']} and depths {record['depths']} must have the same length"
        )
    stem_stride, pool = record.get("stem_stride", 1), record.get("stem_pool", False)
    stem = {"kind": "stem", "act": "relu", "in_channels": in_channels, "out_channels": record["stem"], "kernel": 3,
            "stride": stem_stride, "in_hw": hw}
    if pool:
        stem["pool"] = True  # only then in the spec: the tables' keys of stride-1 stems stay as they were
    plan = [stem]
    hw = _out_hw(hw, 3, stem_stride)
    if pool:
        hw = _out_hw(hw, 3, 2)
    in_ch = record["stem"]
    # The stride rule of ResNet.__init__: every stage but the first halves on its first block.
    for index, (width, depth) in enumerate(zip(record["widths"], record["depths"])):
        for block_index in range(depth):
            stride = 2 if index > 0 and block_index == 0 else 1
            plan.append({"kind": "resnet_basic", "in_channels": in_ch, "out_channels": width,
                         "stride": stride, "in_hw": hw})
            hw = _out_hw(hw, 3, stride)
            in_ch = width
    plan.append({"kind": "head", "act": None, "in_channels": in_ch, "head_channels": None,
                 "num_classes": num_classes, "in_hw": hw})
    return plan


def _mobilenet_plan(record, in_channels, num_classes, hw) -> list[dict[str, Any]]:
    stem_stride = record.get("stem_stride", 1)
    plan = [{"kind": "stem", "act": "relu6", "in_channels": in_channels,
             "out_channels": record["stem"], "kernel": 3, "stride": stem_stride, "in_hw": hw}]
    hw = _out_hw(hw, 3, stem_stride)
    in_ch = record["stem"]
    for blocks in block_args(record["stem"], record["stages"]):
        for args in blocks:
            plan.append({"kind": "inverted_residual", "in_channels": args["in_ch"],
                         "out_channels": args["out_ch"], "stride": args["stride"],
                         "kernel": args["kernel"], "expand": args["expand"], "se": args["se"],
                         "in_hw": hw})
            hw = _out_hw(hw, args["kernel"], args["stride"])
            in_ch = args["out_ch"]
    plan.append({"kind": "head", "act": "relu6", "in_channels": in_ch,
                 "head_channels": record["head"], "num_classes": num_classes, "in_hw": hw})
    return plan


def block_key(spec: dict[str, Any]) -> str:
    """A stable key for a latency table: the same spec gives the same string in any process."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def block_input_shape(spec: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the block's input at batch 1."""
    h, w = spec["in_hw"]
    return (spec["in_channels"], h, w)


def build_block(spec: dict[str, Any]) -> nn.Module:
    """The block of `spec` alone, in eval mode (ready to export and time)."""
    kind = spec["kind"]
    if kind == "stem":
        block = _build_stem(spec)
    elif kind == "resnet_basic":
        block = BasicBlock(spec["in_channels"], spec["out_channels"], spec["stride"])
    elif kind == "inverted_residual":
        block = InvertedResidual(spec["in_channels"], spec["out_channels"], spec["stride"],
                                 spec["kernel"], spec["expand"], spec["se"])
    elif kind == "head":
        block = _build_head(spec)
    else:
        raise ValueError(f"unknown block kind {kind!r}; known: {list(KINDS)}")
    return block.eval()


def _build_stem(spec: dict[str, Any]) -> nn.Module:
    if spec["act"] == "relu":
        if spec["kernel"] != 3:
            raise ValueError(f"a relu stem is ResNet's 3x3 stem, got {spec}")
        return resnet_stem(spec["in_channels"], spec["out_channels"], spec["stride"], spec.get("pool", False))
    if spec["act"] == "relu6":
        return conv_bn_act(spec["in_channels"], spec["out_channels"], spec["kernel"],
                           spec["stride"])
    raise ValueError(f"unknown stem activation {spec['act']!r}; known: 'relu', 'relu6'")


def _build_head(spec: dict[str, Any]) -> nn.Module:
    # The same layers as the models' pool + flatten + fc (after MobileNet's 1x1 head conv).
    layers: list[nn.Module] = []
    in_ch = spec["in_channels"]
    if spec["head_channels"] is not None:
        if spec["act"] != "relu6":
            raise ValueError(f"a head conv is MobileNet's, with relu6; got {spec}")
        layers.append(conv_bn_act(in_ch, spec["head_channels"], 1))
        in_ch = spec["head_channels"]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_ch, spec["num_classes"])]
    return nn.Sequential(*layers)
