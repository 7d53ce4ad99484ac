"""Architectures as small serialisable records, and `build_model(arch)` that makes the module.

A run directory keeps the record (JSON), so any model of a run can be rebuilt from it. Named
presets are the architectures users pass by name (`--teacher-arch resnet_s`).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from typing import Any

from torch import nn

from edgekd.errors import UserError
from edgekd.models.mobilenet import MobileNet
from edgekd.models.resnet import ResNet


def _stage(width: int, depth: int, stride: int, kernel: int, expand: int, se: bool) -> dict:
    return {"width": width, "depth": depth, "stride": stride, "kernel": kernel, "expand": expand,
            "se": se}


# One record per preset; "family" picks the builder, the other keys are its arguments.
PRESETS: dict[str, dict[str, Any]] = {
    "resnet_xs": {"family": "resnet", "stem": 8, "widths": [8, 16, 32], "depths": [1, 1, 1]},
    "resnet_s": {"family": "resnet", "stem": 16, "widths": [16, 32, 64], "depths": [1, 1, 1]},
    "resnet_m": {"family": "resnet", "stem": 32, "widths": [32, 64, 128], "depths": [2, 2, 2]},
    "resnet_l": {"family": "resnet", "stem": 64, "widths": [64, 128, 256], "depths": [2, 2, 2]},
    # Small inputs (8x8..32x32): stem at stride 1 and an overall stride of 4-8, as CIFAR-sized
    # MobileNets do, so the last stage still sees more than one pixel at 16x16 and up.
    "mobilenet_xs": {
        "family": "mobilenet", "stem": 8, "stem_stride": 1, "head": 64,
        "stages": [_stage(8, 1, 1, 3, 1, False), _stage(16, 2, 2, 3, 4, False),
                   _stage(24, 2, 2, 3, 4, True)],
    },
    "mobilenet_s": {
        "family": "mobilenet", "stem": 16, "stem_stride": 1, "head": 128,
        "stages": [_stage(16, 1, 1, 3, 1, False), _stage(24, 2, 2, 3, 6, False),
                   _stage(32, 2, 2, 5, 6, True), _stage(48, 2, 2, 3, 6, True)],
    },
    # Product-sized inputs (96 px and up): ResNet's stride-2 stem and max pool (56x56 at the first
    # stage for 224x224 inputs) and four stages, overall stride 32 as in torchvision's ResNets.
    "resnet_s_224": {"family": "resnet", "stem": 32, "stem_stride": 2, "stem_pool": True,
                     "widths": [32, 64, 128, 256], "depths": [1, 1, 1, 1]},
    "resnet18": {"family": "resnet", "stem": 64, "stem_stride": 2, "stem_pool": True,
                 "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2]},
    # MobileNetV2's layout for 3x224x224 (overall stride 32, 7x7 before the head), with its last
    # two stages (160x3 + 320x1) folded into one 160x3 stage to keep it at six stages.
    "mobilenet_224": {
        "family": "mobilenet", "stem": 32, "stem_stride": 2, "head": 1280,
        "stages": [_stage(16, 1, 1, 3, 1, False), _stage(24, 2, 2, 3, 6, False),
                   _stage(32, 3, 2, 3, 6, False), _stage(64, 4, 2, 3, 6, False),
                   _stage(96, 3, 1, 3, 6, False), _stage(160, 3, 2, 3, 6, False)],
    },
}

_BUILDERS = {"resnet": ResNet, "mobilenet": MobileNet}
# Record keys that describe the record, not the model: never passed to a builder.
_TAGS = ("family", "name", "origin")


def resolve_arch(name_or_record: str | dict[str, Any]) -> dict[str, Any]:
    """A preset name or a record -> a record (a copy, safe to modify)."""
    if isinstance(name_or_record, dict):
        record = copy.deepcopy(name_or_record)
        if record.get("family") not in _BUILDERS:
            raise UserError(
                f"unknown architecture family {record.get('family')!r}; known: {sorted(_BUILDERS)}"
            )
        return record
    if name_or_record not in PRESETS:
        close = difflib.get_close_matches(name_or_record, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown architecture {name_or_record!r}{hint}; known: {', '.join(sorted(PRESETS))}"
        )
    return {"name": name_or_record, **copy.deepcopy(PRESETS[name_or_record])}


def build_model(arch: str | dict[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    record = resolve_arch(arch)
    kwargs = {k: v for k, v in record.items() if k not in _TAGS}
    return _BUILDERS[record["family"]](in_channels=in_channels, num_classes=num_classes, **kwargs)


def arch_name(record: dict[str, Any]) -> str:
    """A short readable name: the preset name, else one derived from the record's numbers."""
    if "name" in record:
        return record["name"]
    if record["family"] == "mobilenet":
        return _mobilenet_name(record)
    if record["family"] == "derived":
        return _derived_name(record)
    widths = "-".join(str(w) for w in record["widths"])
    depths = "".join(str(d) for d in record["depths"])
    return f"{record['family']}_w{widths}_d{depths}"


def _derived_name(record: dict[str, Any]) -> str:
    """"derived_w0.5_drop3_1f0c2a": the width ratio, how many blocks were removed, and a digest
    of which ones (module paths are too long for a name; the record in the run dir lists them)."""
    drop = list(record["drop"])
    name = f"derived_w{float(record['width_ratio']):g}_drop{len(drop)}"
    if drop:
        name += "_" + hashlib.sha256(json.dumps(drop).encode()).hexdigest()[:6]
    return name


def _digits(values: list[Any]) -> str:
    # Single digits run together as in "d122"; anything wider needs a separator to stay
    # unambiguous (the stage count is fixed by the widths part of the name).
    texts = [str(int(v)) for v in values]
    return "".join(texts) if all(len(t) == 1 for t in texts) else "-".join(texts)


def _mobilenet_name(record: dict[str, Any]) -> str:
    stages = record["stages"]
    parts = [
        f"stem{record['stem']}s{record.get('stem_stride', 1)}",
        "w" + "-".join(str(s["width"]) for s in stages),
        "d" + _digits([s["depth"] for s in stages]),
        "s" + _digits([s["stride"] for s in stages]),
        "k" + _digits([s["kernel"] for s in stages]),
        "e" + _digits([s["expand"] for s in stages]),
        "se" + _digits([bool(s["se"]) for s in stages]),
        f"h{record['head']}",
    ]
    return "mobilenet_" + "_".join(parts)


def scale_width(record: dict[str, Any], multiplier: float, channel_multiple: int) -> dict[str, Any]:
    """The record with every width scaled and rounded up to the target's fast channel multiple
    (hardware kernels run fastest on multiples of 8/16/32; odd widths waste the padding)."""

    def scaled(width: int) -> int:
        # round() first: 400 * 1.1 / 8 is 55.000000000000007 in floating point, not 55.
        units = math.ceil(round(width * multiplier / channel_multiple, 6))
        return max(channel_multiple, units * channel_multiple)

    out = {k: copy.deepcopy(v) for k, v in record.items() if k != "name"}
    out["stem"] = scaled(record["stem"])
    if record["family"] == "mobilenet":
        for stage in out["stages"]:
            stage["width"] = scaled(stage["width"])
        out["head"] = scaled(record["head"])
    else:
        out["widths"] = [scaled(w) for w in record["widths"]]
    return out
