"""The channel groups of a model, found by Torch-Pruning's DepGraph, and the layers that cannot be pruned.

Removing an output channel of one layer forces the same removal elsewhere: the layers summed with
it by a residual add, the depthwise convolution and squeeze-excitation gate that follow an
expansion, the input side of every consumer, the slice of a concatenation. DepGraph (Fang et al.,
CVPR 2023) traces the model once and returns these coupled sets as *groups*; a group is the unit
that keeps or removes channels, and the unit latency-guided pruning decides on. A group is named
after its root layer (the first layer Torch-Pruning reports for it).

Works on any traceable module, not only edgekd's families: a user's pickled architecture goes
through the same trace. Layers that cannot be pruned are returned with the reason, never raised on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.io import first_line
from edgekd.models.modes import eval_forward
from edgekd.prune.importance import make_importance

log = logging.getLogger(__name__)

# The layers whose output channels are pruned (Torch-Pruning's root module types, minus LSTM).
WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the root layer's module name
    layers: tuple[str, ...]  # every layer whose output channels this group removes together
    width: int  # output channels now
    channel_groups: int = 1  # >1 next to a grouped convolution: channels go in equal numbers per group


@dataclass(frozen=True)
class SkippedLayer:
    name: str
    reason: str


@dataclass
class GroupAnalysis:
    groups: list[ChannelGroup]
    skipped: list[SkippedLayer]
    output_layer: str | None  # the classifier: its output features are never pruned

    def group(self, name: str) -> ChannelGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no channel group {name!r}; groups: {[g.name for g in self.groups]}")


def layer_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def channel_step(multiple: int, channel_groups: int) -> int:
    """Kept channels move in steps of this: a multiple of the target's fast multiple that a grouped
    convolution can split evenly among its groups."""
    return math.lcm(max(1, multiple), max(1, channel_groups))


def analyse_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    channel_multiple: int,
    ignored_layers: Sequence[str] = (),
    importance: str = "magnitude",
) -> GroupAnalysis:
    """The prunable channel groups of `model` and the layers left out, each with its reason.

    `ignored_layers`: module names the user keeps whole. `importance` (a name in
    edgekd.prune.importance) also leaves out the groups it cannot score: bn_scale reads batch norm
    scales, so a group without batch norm gets none. The model is not modified."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("a TorchScript model cannot be pruned (it has no Python layers to change); "
                        "give the model as a state dict of a built-in architecture or as a pickled module")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, WEIGHTED_LAYERS)}
    unknown = sorted(set(ignored_layers) - set(layers))
    if unknown:
        raise UserError(f"prune.ignored_layers names no convolution or linear layer: {unknown}; "
                        f"layers: {', '.join(list(layers)[:8])}{', ...' if len(layers) > 8 else ''}")
    called = forward_order(model, example_input)
    output_layer = called[-1] if called else None
    reasons: dict[str, str] = {}
    for name in layers:
        if name not in called:
            reasons[name] = "did not run on the example input (a branch for other inputs or for training only)"
    if output_layer is not None:
        reasons[output_layer] = "the classifier: its output features are the model's outputs"
    for name in ignored_layers:
        reasons.setdefault(name, "kept whole on request (prune.ignored_layers)")
    groups: list[ChannelGroup] = []
    # Only bn_scale can fail to score a group; taylor would need gradients to be asked here.
    scorer = make_importance(importance) if importance == "bn_scale" else None
    try:
        with dependency_graph(model, example_input, [layers[n] for n in reasons]) as pruner:
            names = pruner.DG._module2name
            for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                  root_module_types=list(WEIGHTED_LAYERS)):
                root = group[0].dep.target.module
                members = tuple(names[dep.target.module] for dep, _ in group
                                if pruner.DG.is_out_channel_pruning_fn(dep.handler)
                                and isinstance(dep.target.module, WEIGHTED_LAYERS))
                found = ChannelGroup(names[root], members, int(pruner.DG.get_out_channels(root)),
                                     int(pruner._get_channel_groups(group)))
                why = _why_not_prunable(found, channel_multiple, scorer, group)
                if why:
                    reasons.update({member: why for member in members})
                else:
                    groups.append(found)
            coupled = _coupled_reasons(pruner, layers, reasons, groups)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning fails on untraceable models in many ways
        why = f"Torch-Pruning cannot trace the model: {first_line(exc)}"
        return GroupAnalysis([], [SkippedLayer(n, reasons.get(n, why)) for n in layers], output_layer)
    reasons.update(coupled)
    skipped = [SkippedLayer(name, reasons[name]) for name in layers if name in reasons]
    return GroupAnalysis(groups, skipped, output_layer)


def _why_not_prunable(group: ChannelGroup, multiple: int, scorer, tp_group) -> str | None:
    step = channel_step(multiple, group.channel_groups)
    if group.width <= step:
        return (f"{group.width} channels: too few to remove any and keep a multiple of {step}"
                + (f" ({group.channel_groups} convolution groups)" if group.channel_groups > 1 else ""))
    if scorer is not None and scorer(tp_group) is None:
        return "bn_scale importance reads batch norm scales, and no batch norm follows this layer"
    return None


def _coupled_reasons(pruner, layers: dict[str, nn.Module], reasons: dict[str, str],
                     groups: list[ChannelGroup]) -> dict[str, str]:
    """Why each remaining layer has no group: its channels are tied to a layer that stays whole
    (Torch-Pruning drops the whole group then), or Torch-Pruning could not follow its output."""
    in_groups = {member for group in groups for member in group.layers}
    out: dict[str, str] = {}
    kept_whole = {layers[n]: n for n in reasons}
    for name, layer in layers.items():
        if name in in_groups or name in reasons:
            continue
        try:
            group = pruner.DG.get_pruning_group(layer, pruner.DG.get_pruner_of_module(layer).prune_out_channels,
                                                list(range(layer_width(layer))))
            ties = sorted({kept_whole[dep.target.module] for dep, _ in group if dep.target.module in kept_whole})
        except Exception:  # noqa: BLE001 - a layer outside the traced graph
            ties = []
        out[name] = (f"its output channels are tied to {', '.join(ties)}, which is not pruned" if ties else
                     "Torch-Pruning found no channel group for it (its output feeds an operation it cannot follow)")
    return out


@contextlib.contextmanager
def dependency_graph(model: nn.Module, example_input: torch.Tensor, ignored: Sequence[nn.Module] = (),
                     **pruner_kwargs) -> Iterator:
    """A Torch-Pruning BasePruner on `model` (its DepGraph traced once), with autograd switched on
    for every parameter while it lives: DepGraph reads the graph from autograd, and a frozen model
    has none. The model's train/eval mode and requires_grad flags are restored afterwards."""
    import torch_pruning as tp

    was_training = model.training
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    model.eval()  # batch norm statistics must not move while Torch-Pruning traces
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            # "Unwrapped parameters detected": Torch-Pruning then prunes their last non-singleton
            # dimension, which is the channel dimension for the per-channel scales CNNs hold.
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            pruner_kwargs.setdefault("importance", tp.importance.GroupMagnitudeImportance(p=2))
            pruner_kwargs.setdefault("pruning_ratio", 0.0)
            yield tp.pruner.BasePruner(model, example_input, ignored_layers=list(ignored), **pruner_kwargs)
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)


def forward_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the convolution and linear layers in the order an eval-mode forward pass first
    calls them; layers it never calls are not listed."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name) if name not in order else None)
        for name, module in model.named_modules() if isinstance(module, WEIGHTED_LAYERS)
    ]
    try:
        eval_forward(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    return order
