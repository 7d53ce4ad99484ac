"""Architectures as small serialisable records, and `build_model(arch)` that makes the module.

A run directory keeps the record (JSON), so any model of a run can be rebuilt from it. Named
presets are the architectures users pass by name (`--teacher-arch resnet_s`).
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Any

from torch import nn

from edgekd.errors import UserError
from edgekd.models.resnet import ResNet

# One record per preset; "family" picks the builder, the other keys are its arguments.
PRESETS: dict[str, dict[str, Any]] = {
    "resnet_xs": {"family": "resnet", "stem": 8, "widths": [8, 16, 32], "depths": [1, 1, 1]},
    "resnet_s": {"family": "resnet", "stem": 16, "widths": [16, 32, 64], "depths": [1, 1, 1]},
    "resnet_m": {"family": "resnet", "stem": 32, "widths": [32, 64, 128], "depths": [2, 2, 2]},
    "resnet_l": {"family": "resnet", "stem": 64, "widths": [64, 128, 256], "depths": [2, 2, 2]},
}

_BUILDERS = {"resnet": ResNet}


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
    kwargs = {k: v for k, v in record.items() if k not in ("family", "name")}
    return _BUILDERS[record["family"]](in_channels=in_channels, num_classes=num_classes, **kwargs)


def arch_name(record: dict[str, Any]) -> str:
    """A short readable name: the preset name, else one derived from the record's numbers."""
    if "name" in record:
        return record["name"]
    widths = "-".join(str(w) for w in record["widths"])
    depths = "".join(str(d) for d in record["depths"])
    return f"{record['family']}_w{widths}_d{depths}"


def scale_width(record: dict[str, Any], multiplier: float, channel_multiple: int) -> dict[str, Any]:
    """The record with every width scaled and rounded up to the target's fast channel multiple
    (hardware kernels run fastest on multiples of 8/16/32; odd widths waste the padding)."""

    def scaled(width: int) -> int:
        # round() first: 400 * 1.1 / 8 is 55.000000000000007 in floating point, not 55.
        units = math.ceil(round(width * multiplier / channel_multiple, 6))
        return max(channel_multiple, units * channel_multiple)

    out = {k: v for k, v in record.items() if k != "name"}
    out["stem"] = scaled(record["stem"])
    out["widths"] = [scaled(w) for w in record["widths"]]
    return out
