"""Structured channel pruning: a plan (channels kept per group) and applying it with Torch-Pruning.

A plan maps each channel group (edgekd.prune.groups) to the channels it keeps, always a multiple
of the target's fast channel multiple (Target.channel_multiple): a width between multiples runs
at the speed of the next multiple up on vectorised kernels and wastes the difference (Torch-Pruning
#38: unrounded MobileNetV2 widths ran 3x slower in ONNX Runtime). Plans come from a uniform ratio,
from Torch-Pruning's global or isomorphic ranking, or from the latency-guided search
(edgekd.prune.latency_guided); `prune_channels` applies any of them to a copy of the model.

We round ourselves instead of passing Torch-Pruning's `round_to`: it rounds the kept channels
*down*, which takes a layer narrower than two multiples to zero channels, and next to a grouped
convolution it rounds the per-group count against the total. Each group gets an exact ratio
instead (`_exact_ratio`), and the result is checked against the plan.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.io import first_line
from edgekd.models import count_macs, count_params
from edgekd.models.modes import eval_forward
from edgekd.prune.groups import (
    ChannelGroup,
    GroupAnalysis,
    SkippedLayer,
    analyse_groups,
    channel_step,
    dependency_graph,
    layer_width,
)
from edgekd.prune.importance import (
    accumulate_gradients_,
    check_importance,
    make_importance,
    needs_gradients,
)

log = logging.getLogger(__name__)

ALLOCATIONS = ("uniform", "global", "isomorphic")

Plan = dict[str, int]  # channel group name -> output channels kept


@dataclass
class ChannelPruneResult:
    model: nn.Module  # the pruned copy; the caller's model is never changed
    plan: Plan  # channels kept per group that was pruned
    widths: dict[str, int]  # every prunable group's channels before
    skipped: list[SkippedLayer]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    notes: list[str] = field(default_factory=list)

    @property
    def mac_reduction(self) -> float:
        """Fraction of the MACs removed (0.4: 40% fewer)."""
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict:
        return {
            "plan": {name: {"before": self.widths[name], "after": kept} for name, kept in self.plan.items()},
            "skipped": [{"layer": s.name, "reason": s.reason} for s in self.skipped],
            "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "mac_reduction": round(self.mac_reduction, 4), "notes": list(self.notes),
        }


def kept_channels(width: int, keep_fraction: float, step: int) -> int:
    """`width * keep_fraction` rounded up to a multiple of `step`, at least one step and below
    `width` whenever anything is removed (a group narrower than two steps keeps `width`)."""
    if width <= step:
        return width
    # round() first: 400 * 0.55 / 8 is 27.500000000000004 in floating point, not 27.5.
    wanted = math.ceil(round(width * keep_fraction / step, 6)) * step
    if wanted >= width:
        return width
    return max(step, wanted)


def uniform_plan(analysis: GroupAnalysis, ratio: float, multiple: int) -> Plan:
    """Every group keeps (1 - ratio) of its channels, rounded up to the multiple."""
    check_ratio(ratio)
    return {g.name: kept_channels(g.width, 1.0 - ratio, channel_step(multiple, g.channel_groups))
            for g in analysis.groups}


def ranked_plan(model: nn.Module, example_input: torch.Tensor, analysis: GroupAnalysis, ratio: float,
                multiple: int, *, importance: str = "magnitude", isomorphic: bool = False,
                grad_batch: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> Plan:
    """Torch-Pruning's global ranking (`global_pruning`; with `isomorphic`, ranked only among groups
    of the same structure, Fang et al. ECCV 2024): `ratio` of all channels go, the least important
    first, wherever they are. Run on a copy; the counts it leaves are rounded up to the multiple."""
    check_ratio(ratio)
    trial = copy.deepcopy(model)
    if needs_gradients(importance):
        accumulate_gradients_(trial, *_grad_batch(grad_batch, example_input))
    skipped = [trial.get_submodule(s.name) for s in analysis.skipped]
    with dependency_graph(trial, example_input, skipped, importance=make_importance(importance),
                          pruning_ratio=ratio, global_pruning=True, isomorphic=isomorphic,
                          max_pruning_ratio=0.95) as pruner:
        pruner.step()
    return {g.name: kept_channels(g.width, layer_width(trial.get_submodule(g.name)) / g.width,
                                  channel_step(multiple, g.channel_groups)) for g in analysis.groups}


def prune_channels(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    channel_multiple: int,
    ratio: float | None = None,
    plan: Plan | None = None,
    allocation: str = "uniform",
    importance: str = "magnitude",
    ignored_layers: Sequence[str] = (),
    grad_batch: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    analysis: GroupAnalysis | None = None,
) -> ChannelPruneResult:
    """A pruned copy of `model`: either `plan` (channels kept per group, e.g. from the latency-guided
    search) or `ratio` of each group's channels removed (`allocation` "uniform") or of all channels
    (`allocation` "global"/"isomorphic", Torch-Pruning's ranking). Channels to remove are chosen by
    `importance` (magnitude, taylor, bn_scale, lamp); taylor reads gradients on `grad_batch` (x, y).

    Layers that cannot be pruned (the classifier, narrow or untraceable layers, layers whose removal
    breaks the forward pass) are left whole and listed in `skipped` with the reason."""
    if (ratio is None) == (plan is None):
        raise ValueError("give exactly one of ratio and plan")
    if allocation not in ALLOCATIONS:
        raise UserError(f"unknown prune allocation {allocation!r}; known: {', '.join(ALLOCATIONS)}")
    check_importance(importance)
    if analysis is None:
        analysis = analyse_groups(model, example_input, channel_multiple=channel_multiple,
                                  ignored_layers=ignored_layers, importance=importance)
    if plan is None:
        plan = (uniform_plan(analysis, ratio, channel_multiple) if allocation == "uniform" else
                ranked_plan(model, example_input, analysis, ratio, channel_multiple, importance=importance,
                            isomorphic=allocation == "isomorphic", grad_batch=grad_batch))
    groups = {g.name: g for g in analysis.groups}
    _check_plan(plan, groups, channel_multiple)
    plan = {name: kept for name, kept in plan.items() if kept < groups[name].width}
    skipped = list(analysis.skipped)
    pruned, failures = _apply_checked(model, example_input, plan, groups, analysis, importance, grad_batch)
    for name, reason in failures.items():
        skipped += [SkippedLayer(layer, reason) for layer in groups[name].layers]
        plan.pop(name)
    shape = tuple(example_input.shape[1:])
    return ChannelPruneResult(
        model=pruned, plan=plan, widths={g.name: g.width for g in analysis.groups}, skipped=skipped,
        macs_before=count_macs(model, shape) or 0, macs_after=count_macs(pruned, shape) or 0,
        params_before=count_params(model), params_after=count_params(pruned),
    )


def check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise UserError(f"prune ratio must be in [0, 1), got {ratio}")


def _check_plan(plan: Plan, groups: dict[str, ChannelGroup], multiple: int) -> None:
    for name, kept in plan.items():
        if name not in groups:
            raise UserError(f"the pruning plan names {name!r}, which is no prunable channel group of this model "
                            f"(groups: {', '.join(groups)})")
        step = channel_step(multiple, groups[name].channel_groups)
        if kept != groups[name].width and (kept < step or kept % step or kept > groups[name].width):
            raise UserError(f"the pruning plan keeps {kept} channels of {name} ({groups[name].width}); "
                            f"it must be a multiple of {step} between {step} and {groups[name].width}")


def _apply_checked(model, example_input, plan, groups, analysis, importance, grad_batch):
    """The plan applied to a copy, and {group: reason} for groups left whole because pruning them
    breaks the model. The common case costs one copy; only a failure tries each group alone."""
    # A layer the eval trace never ran (a training-only head) is invisible to Torch-Pruning: if its
    # input channels are pruned away, only a training-mode forward pass shows it.
    check_training = any("did not run" in s.reason for s in analysis.skipped)
    reference = _output_shapes(model, example_input, check_training)
    try:
        return _apply(model, example_input, plan, groups, analysis, importance, grad_batch, reference), {}
    except _BrokenModel:
        pass
    failures = {}
    for name in list(plan):
        try:
            _apply(model, example_input, {name: plan[name]}, groups, analysis, importance, grad_batch, reference)
        except _BrokenModel as exc:
            failures[name] = f"pruning it breaks the forward pass: {exc}"
            log.warning("prune: %s left whole: %s", name, failures[name])
    rest = {name: kept for name, kept in plan.items() if name not in failures}
    try:
        return _apply(model, example_input, rest, groups, analysis, importance, grad_batch, reference), failures
    except _BrokenModel as exc:  # groups fine alone but broken together: keep the model whole
        failures.update({name: f"pruning it with the others breaks the forward pass: {exc}" for name in rest})
        return copy.deepcopy(model), failures


class _BrokenModel(Exception):
    pass


def _apply(model, example_input, plan, groups, analysis, importance, grad_batch, reference) -> nn.Module:
    pruned = copy.deepcopy(model)
    if not plan:
        return pruned
    if needs_gradients(importance):
        accumulate_gradients_(pruned, *_grad_batch(grad_batch, example_input))
    ratios = {pruned.get_submodule(name): _exact_ratio(groups[name], kept) for name, kept in plan.items()}
    ignored = [pruned.get_submodule(s.name) for s in analysis.skipped]
    try:
        with dependency_graph(pruned, example_input, ignored, importance=make_importance(importance),
                              pruning_ratio_dict=ratios) as pruner:
            pruner.step()
        shapes = _output_shapes(pruned, example_input, len(reference) > 1)
    except Exception as exc:  # noqa: BLE001 - a user's forward may hard-code a channel count
        raise _BrokenModel(first_line(exc)) from exc
    if shapes != reference:
        raise _BrokenModel(f"the output shape changed from {reference[0]} to {shapes[0]}")
    pruned.zero_grad(set_to_none=True)
    for name, kept in plan.items():
        widths = {layer: layer_width(pruned.get_submodule(layer)) for layer in groups[name].layers}
        if any(w != kept for w in widths.values()):
            raise RuntimeError(f"Torch-Pruning left {widths} in group {name}, planned {kept}")
    return pruned


def _exact_ratio(group: ChannelGroup, kept: int) -> float:
    """The pruning ratio for which Torch-Pruning keeps exactly `kept` channels: it keeps
    int(per_group_width * (1 - ratio)) per convolution group, so aim half a channel above."""
    per_group = group.width // group.channel_groups
    return 1.0 - (kept // group.channel_groups + 0.5) / per_group


def _output_shapes(model: nn.Module, example_input: torch.Tensor, training_too: bool) -> list[tuple[int, ...]]:
    """The output shape in eval mode and, with `training_too`, in training mode (on a copy, so that
    batch norm statistics do not move; a batch of two, which training-mode batch norm needs)."""
    shapes = [tuple(eval_forward(model, example_input).shape)]
    if training_too:
        with torch.no_grad():
            shapes.append(tuple(copy.deepcopy(model).train()(example_input[:1].expand(2, *example_input.shape[1:])).shape[1:]))
    return shapes


def _grad_batch(grad_batch, example_input):
    if grad_batch is None:
        if len(example_input) < 2:
            raise UserError("taylor importance needs a batch of images (grad_batch) to take gradients on")
        return example_input, None
    return grad_batch
