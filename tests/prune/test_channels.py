"""Structured channel pruning on every block pattern: the pruned model exports to ONNX and OpenVINO
and the artifacts compute what the pruned torch model computes; channel counts land on the target's
multiple; layers that cannot be pruned are listed with the reason, never crashed on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from prune_patterns import HardCodedWidth, UserNet, pattern_models, randomise_batch_norm_
from torch import nn

from edgekd.errors import UserError
from edgekd.prune.channels import kept_channels, prune_channels, uniform_plan
from edgekd.prune.groups import analyse_groups, channel_step, layer_width

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def widths(model: nn.Module) -> dict[str, int]:
    return {name: layer_width(m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("pattern", list(pattern_models()))
def test_pruned_pattern_exports_and_matches_torch(pattern, tmp_path):
    from edgekd.backends import onnx as onnx_backend
    from edgekd.backends import openvino

    model = randomise_batch_norm_(pattern_models()[pattern])
    before = widths(model)
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5)
    assert widths(model) == before, "the caller's model must stay as it was"
    assert result.plan and result.macs_after < result.macs_before
    pruned = result.model.eval()
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = pruned(x).numpy()
    assert expected.shape == (5, 10)
    onnx_path = onnx_backend.export(pruned, EXAMPLE[:1], tmp_path / "pruned.onnx", metadata={})
    ir_path = openvino.export(pruned, EXAMPLE[:1], tmp_path / "pruned.xml", metadata={})
    np.testing.assert_allclose(onnx_backend.predict_logits(onnx_path, x), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(openvino.predict_logits(ir_path, x), expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("multiple", [8, 16])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_every_pruned_group_keeps_a_multiple_of_the_target_multiple(multiple, ratio):
    for name, model in pattern_models().items():
        result = prune_channels(model, EXAMPLE, channel_multiple=multiple, ratio=ratio)
        analysis = analyse_groups(model, EXAMPLE, channel_multiple=multiple)
        for group in analysis.groups:
            step = channel_step(multiple, group.channel_groups)
            for layer in group.layers:
                width = layer_width(result.model.get_submodule(layer))
                assert width == result.plan.get(group.name, group.width), (name, layer)
                if group.name in result.plan:
                    assert width % step == 0 and step <= width < group.width, (name, layer, width)


def test_grouped_convolution_keeps_whole_groups_on_the_multiple():
    model = pattern_models()["grouped"]
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5)
    grouped = result.model.grouped
    assert grouped.groups == 4
    assert grouped.out_channels % 8 == 0 and grouped.in_channels % 4 == 0 and grouped.out_channels < 64


def test_kept_channels_rounds_up_to_the_step_and_never_to_zero():
    assert kept_channels(64, 0.5, 8) == 32
    assert kept_channels(64, 0.45, 8) == 32  # 28.8 rounds up
    assert kept_channels(16, 0.1, 8) == 8  # never below one step
    assert kept_channels(8, 0.5, 8) == 8  # too narrow to prune: unchanged
    assert kept_channels(24, 0.5, 16) == 16  # an off-multiple width lands on the multiple
    assert kept_channels(64, 0.99, 8) == 64
    assert channel_step(8, 4) == 8 and channel_step(8, 3) == 24 and channel_step(16, 1) == 16


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "bn_scale", "lamp"])
def test_each_importance_prunes_to_the_plan(importance):
    model = pattern_models()["inverted_residual_se"]
    batch = (torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,)))
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5, importance=importance,
                            grad_batch=batch)
    assert result.plan
    for name, kept in result.plan.items():
        assert layer_width(result.model.get_submodule(name)) == kept


def test_bn_scale_leaves_layers_without_batch_norm_whole():
    result = prune_channels(pattern_models()["concat"], EXAMPLE, channel_multiple=8, ratio=0.5,
                            importance="bn_scale")
    reasons = {s.name: s.reason for s in result.skipped}
    assert result.plan == {}
    assert all("batch norm" in reasons[name] for name in ("left", "right", "mix"))


def test_taylor_and_magnitude_remove_different_channels():
    model = pattern_models()["residual"]
    batch = (torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(3)), torch.arange(32) % 10)
    kept = {}
    for importance in ("magnitude", "taylor"):
        pruned = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5, importance=importance,
                                grad_batch=batch).model
        kept[importance] = pruned.stages[0][0].conv1[0].weight.detach()
    assert kept["magnitude"].shape == kept["taylor"].shape
    assert not torch.equal(kept["magnitude"], kept["taylor"])


def test_global_and_isomorphic_allocations_round_to_the_multiple():
    model = pattern_models()["residual"]
    for allocation in ("global", "isomorphic"):
        result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5, allocation=allocation)
        assert result.macs_after < result.macs_before
        assert all(kept % 8 == 0 for kept in result.plan.values())


def test_layers_that_cannot_be_pruned_are_listed_with_the_reason():
    model = UserNet()
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5)
    reasons = {s.name: s.reason for s in result.skipped}
    assert "classifier" in reasons["fc"]
    assert "did not run" in reasons["aux"]  # only called in training mode
    # The training-only head reads conv_b's channels, which Torch-Pruning cannot see from the
    # eval trace: pruning that group would break training, so it stays whole, with the reason.
    assert "breaks the forward pass" in reasons["conv_b"] and result.model.conv_b.out_channels == 24
    assert result.plan == {"conv_c": 16}
    assert result.model(EXAMPLE).shape == (2, 10)
    assert result.model.train()(EXAMPLE).shape == (2, 10)


def test_a_layer_whose_pruning_breaks_the_forward_pass_is_listed_not_crashed_on():
    model = HardCodedWidth()
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5)
    reasons = {s.name: s.reason for s in result.skipped}
    assert "breaks the forward pass" in reasons["conv2"]
    assert result.model.conv2.out_channels == 32  # left whole
    assert result.model.conv1.out_channels == 16  # its neighbour still pruned
    assert result.model(EXAMPLE).shape == (2, 10)


def test_narrow_and_ignored_layers_are_listed():
    model = pattern_models()["concat"]
    result = prune_channels(model, EXAMPLE, channel_multiple=16, ratio=0.5, ignored_layers=["mix"])
    reasons = {s.name: s.reason for s in result.skipped}
    assert "too few" in reasons["left"]  # 16 channels cannot lose any and stay on 16
    assert "on request" in reasons["mix"]
    assert set(result.plan) == {"right"} and result.model.right.out_channels == 16


def test_a_pickled_user_architecture_prunes(tmp_path):
    path = tmp_path / "user.pt"
    torch.save(UserNet(), path)
    model = torch.load(path, weights_only=False).eval()  # the user opted in to a pickle (--trust-pickle)
    model.aux = None  # without the training-only head, the inline residual block prunes too
    result = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5)
    assert result.model.conv_b.out_channels == 16 and result.model.scale.shape == (1, 16, 1, 1)
    assert result.model.fc.in_features == result.model.conv_c.out_channels * 64


def test_bad_input_is_a_user_error():
    model = pattern_models()["residual"]
    with pytest.raises(UserError, match="did you mean 'lamp'"):
        prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5, importance="lam")
    with pytest.raises(UserError, match="ratio"):
        prune_channels(model, EXAMPLE, channel_multiple=8, ratio=1.0)
    with pytest.raises(UserError, match="multiple of 8"):
        prune_channels(model, EXAMPLE, channel_multiple=8, plan={"stem.0": 12})
    with pytest.raises(UserError, match="ignored_layers"):
        prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5, ignored_layers=["nope"])
    with pytest.raises(UserError, match="TorchScript"):
        prune_channels(torch.jit.trace(model.eval(), EXAMPLE), EXAMPLE, channel_multiple=8, ratio=0.5)


def test_uniform_plan_matches_scale_width_rounding():
    model = pattern_models()["residual"]
    analysis = analyse_groups(model, EXAMPLE, channel_multiple=8)
    plan = uniform_plan(analysis, 0.3, 8)
    for group in analysis.groups:
        assert plan[group.name] == min(group.width, math.ceil(group.width * 0.7 / 8) * 8)
