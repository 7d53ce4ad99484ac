"""Latency-guided per-group channel counts: the search reaches a latency goal on the target's latency
function within a bounded number of steps, prunes where time is saved and nowhere else, and the
uniform baseline is found at the same latency."""

from __future__ import annotations

import pytest
import torch
from prune_patterns import RESNET, pattern_models
from torch import nn

from edgekd.errors import UserError
from edgekd.models import build_model
from edgekd.prune.channels import prune_channels
from edgekd.prune.groups import layer_width
from edgekd.prune.latency_guided import latency_guided_plan, match_uniform_ratio
from edgekd.prune.target_latency import latency_fn_for_target, openvino_latency, predicted_latency_fn
from edgekd.target import load_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
BATCH = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1))
SHAPE_224 = (1, 224, 224)


def jetson_fp32():
    # The analytical prediction for a target that is not attached: deterministic, and labelled.
    return predicted_latency_fn(load_target("jetson-orin"), SHAPE_224, "fp32")


def test_reaches_the_goal_on_the_targets_latency_with_channels_on_the_multiple():
    model = build_model(RESNET, 1, 10).eval()
    latency = jetson_fp32()
    baseline, source = latency(model)
    assert source.startswith("predicted (analytical")
    result = latency_guided_plan(model, EXAMPLE, latency_fn=latency, goal_ms=baseline / 1.5, channel_multiple=8,
                                 score_batch=BATCH, max_steps=12, step_fraction=0.25)
    assert result.reached_goal, result.stop_reason
    assert result.latency_source == source and result.baseline_ms == pytest.approx(baseline)
    assert all(kept % 8 == 0 for kept in result.plan.values())
    pruned = prune_channels(model, EXAMPLE, channel_multiple=8, plan=result.plan).model
    assert latency(pruned)[0] == pytest.approx(result.final_ms)
    assert len(result.steps) <= 12 and result.latency_calls > len(result.steps)


def test_the_number_of_steps_is_bounded():
    model = build_model(RESNET, 1, 10).eval()
    latency = jetson_fp32()
    result = latency_guided_plan(model, EXAMPLE, latency_fn=latency, goal_ms=latency(model)[0] / 10,
                                 channel_multiple=8, score_batch=BATCH, max_steps=2)
    assert len(result.steps) == 2 and not result.reached_goal
    assert result.stop_reason == "2 steps done"


def test_groups_that_save_no_time_on_the_target_are_not_pruned():
    """A target on which only the second stage costs time (as a latency table can say of a layer
    that runs at per-call overhead): the search leaves every other group whole."""
    model = build_model(RESNET, 1, 10).eval()

    def second_stage_only(candidate: nn.Module) -> tuple[float, str]:
        block = candidate.stages[1][0]
        return float(layer_width(block.conv1[0]) + 2 * layer_width(block.conv2[0])), "predicted (table)"

    result = latency_guided_plan(model, EXAMPLE, latency_fn=second_stage_only, goal_ms=40.0, channel_multiple=8,
                                 score_batch=BATCH, max_steps=6, step_fraction=0.25)
    assert result.reached_goal
    assert set(result.plan) <= {"stages.1.0.conv1.0", "stages.1.0.shortcut.0"}
    assert all(candidate["group"] != "stem.0" or candidate["saved_ms"] == 0
               for step in result.steps for candidate in step.candidates)


def test_stops_when_no_group_saves_time():
    model = pattern_models()["concat"]
    result = latency_guided_plan(model, EXAMPLE, latency_fn=lambda _m: (1.0, "measured"), goal_ms=0.5,
                                 channel_multiple=8, score_batch=BATCH)
    assert result.plan == {} and "no group saves" in result.stop_reason


def test_uniform_ratio_is_matched_to_a_latency():
    model = build_model(RESNET, 1, 10).eval()
    latency = jetson_fp32()
    target = latency(model)[0] * 0.7
    ratio, plan, ms = match_uniform_ratio(model, EXAMPLE, latency_fn=latency, target_ms=target, channel_multiple=8)
    assert 0 < ratio < 0.9 and plan
    # Widths move in steps of 8, so few latencies are reachable: the match is the closest of them.
    reachable = [latency(prune_channels(model, EXAMPLE, channel_multiple=8, ratio=r).model)[0]
                 for r in (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)]
    assert abs(ms - target) <= min(abs(other - target) for other in reachable) + 1e-9


def test_latency_function_is_measured_where_the_target_runs_here_and_predicted_elsewhere():
    tiny = pattern_models()["concat"]
    measured = latency_fn_for_target(load_target("x86-cpu"), (1, 16, 16), "fp32", warmup=2, runs=5)
    ms, source = measured(tiny)
    assert source == "measured" and ms > 0
    int8 = openvino_latency((1, 16, 16), precision="int8", warmup=2, runs=5, statistic="min")
    ms, source = int8(tiny)
    assert source == "measured" and ms > 0
    predicted = latency_fn_for_target(load_target("jetson-orin"), (1, 16, 16), "int8")
    assert predicted(tiny)[1].startswith("predicted")


def test_bad_goal_and_steps_are_user_errors():
    model = pattern_models()["concat"]
    with pytest.raises(UserError, match="goal"):
        latency_guided_plan(model, EXAMPLE, latency_fn=jetson_fp32(), goal_ms=0, channel_multiple=8,
                            score_batch=BATCH)
    with pytest.raises(UserError, match="max_steps"):
        latency_guided_plan(model, EXAMPLE, latency_fn=jetson_fp32(), goal_ms=1, channel_multiple=8,
                            score_batch=BATCH, max_steps=0)
