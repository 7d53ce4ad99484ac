"""Layer plans: a model as block specs that rebuild it exactly, block by block."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekd.models import build_model, count_macs, count_params, resolve_arch
from edgekd.models.blocks import (
    KINDS,
    block_input_shape,
    block_key,
    build_block,
    layer_plan,
)
from edgekd.models.mobilenet import InvertedResidual
from edgekd.models.resnet import BasicBlock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_MOBILE_RECORD = {
    "family": "mobilenet", "stem": 8, "stem_stride": 2, "head": 32, "origin": "teacher-derived",
    "stages": [
        {"width": 8, "depth": 2, "stride": 1, "kernel": 5, "expand": 1, "se": True},
        {"width": 16, "depth": 1, "stride": 2, "kernel": 7, "expand": 3, "se": False},
    ],
}
RECORDS = [
    "resnet_xs",
    "resnet_m",
    {"family": "resnet", "stem": 8, "widths": [16, 16], "depths": [2, 1]},
    "mobilenet_xs",
    "mobilenet_s",
    "mobilenet_224",
    _MOBILE_RECORD,
]


def _record_id(record):
    return record if isinstance(record, str) else json.dumps(record)[:40]


@pytest.mark.parametrize("record", RECORDS, ids=_record_id)
@pytest.mark.parametrize("in_channels, input_hw", [(3, (8, 8)), (1, (32, 32)), (3, (17, 12))])
def test_blocks_add_up_to_the_model(record, in_channels, input_hw):
    model = build_model(record, in_channels, 7).eval()
    plan = layer_plan(resolve_arch(record), in_channels, 7, input_hw)
    assert [spec["kind"] for spec in (plan[0], plan[-1])] == ["stem", "head"]
    assert {spec["kind"] for spec in plan} <= set(KINDS)
    blocks = [build_block(spec) for spec in plan]
    assert sum(count_params(b) for b in blocks) == count_params(model)
    macs = sum(count_macs(b, block_input_shape(s)) for b, s in zip(blocks, plan))
    assert macs == count_macs(model, (in_channels, *input_hw))

    # Chained, the blocks are the model: same output shape, and each block's input is the
    # shape its spec says.
    x = torch.rand(1, in_channels, *input_hw)
    with torch.no_grad():
        for block, spec in zip(blocks, plan):
            assert tuple(x.shape[1:]) == block_input_shape(spec)
            x = block(x)
        assert x.shape == model(torch.rand(1, in_channels, *input_hw)).shape == (1, 7)


@pytest.mark.parametrize("record", RECORDS, ids=_record_id)
def test_blocks_are_the_model_classes_and_eval_ready(record):
    model = build_model(record, 3, 10)
    plan = layer_plan(resolve_arch(record), 3, 10, (16, 16))
    # Same block classes with the same parameter shapes, in the same order.
    model_blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, InvertedResidual))]
    plan_blocks = [build_block(s) for s in plan if s["kind"] in ("resnet_basic", "inverted_residual")]
    assert len(model_blocks) == len(plan_blocks)
    for ours, theirs in zip(plan_blocks, model_blocks):
        assert type(ours) is type(theirs)
        assert not ours.training
        assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    assert all(not build_block(s).training for s in plan)


def test_plan_is_json_and_keys_are_stable_and_distinct():
    plan = layer_plan(resolve_arch("mobilenet_s"), 3, 10, (32, 32))
    assert json.loads(json.dumps(plan)) == plan
    again = layer_plan(resolve_arch("mobilenet_s"), 3, 10, (32, 32))
    assert [block_key(s) for s in plan] == [block_key(s) for s in again]
    reordered = {key: plan[1][key] for key in reversed(list(plan[1]))}
    assert block_key(reordered) == block_key(plan[1])
    # Every differing spec gets its own key.
    specs = {block_key(s): s for s in plan}
    assert len(specs) == len({json.dumps(s, sort_keys=True) for s in plan})
    changed = dict(plan[1], se=not plan[1]["se"])
    assert block_key(changed) != block_key(plan[1])
    assert block_key(dict(plan[1], in_hw=[16, 16])) != block_key(plan[1])


def test_keys_of_the_two_families_never_collide():
    # Same channels and input size: a ResNet stem (ReLU) and a MobileNet stem (ReLU6) are
    # different blocks, and so are the two heads.
    resnet = layer_plan({"family": "resnet", "stem": 16, "widths": [16], "depths": [1]},
                        3, 10, (8, 8))
    mobile = layer_plan({"family": "mobilenet", "stem": 16, "stem_stride": 1, "head": 16,
                         "stages": [{"width": 16, "depth": 1, "stride": 1, "kernel": 3,
                                     "expand": 1, "se": False}]}, 3, 10, (8, 8))
    assert not {block_key(s) for s in resnet} & {block_key(s) for s in mobile}
    assert isinstance(build_block(resnet[0])[2], nn.ReLU)
    assert isinstance(build_block(mobile[0])[2], nn.ReLU6)


def test_spatial_sizes_follow_the_strides():
    plan = layer_plan(resolve_arch("mobilenet_224"), 3, 1000, (224, 224))
    assert plan[0]["in_hw"] == [224, 224] and plan[1]["in_hw"] == [112, 112]
    assert plan[-1]["in_hw"] == [7, 7]
    odd = layer_plan(resolve_arch("resnet_s"), 3, 10, (9, 7))
    assert [s["in_hw"] for s in odd] == [[9, 7], [9, 7], [9, 7], [5, 4], [3, 2]]


def test_unknown_kind_and_bad_stem():
    with pytest.raises(ValueError, match="unknown block kind"):
        build_block({"kind": "attention", "in_channels": 8, "in_hw": [4, 4]})
    with pytest.raises(ValueError, match="unknown stem activation"):
        build_block({"kind": "stem", "act": "gelu", "in_channels": 3, "out_channels": 8,
                     "kernel": 3, "stride": 1, "in_hw": [8, 8]})
