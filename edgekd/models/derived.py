"""Teacher-derived student candidates (N2N-style: the teacher with blocks removed, channels thinned).

A student cut from the teacher starts from an architecture the teacher's task already proved,
so search offers these beside its own family. Two sources:

- a built-in teacher record (resnet, mobilenet): the candidates are ordinary records with fewer
  blocks per stage and thinner widths, built like any other student;
- any other traceable teacher module (a pickled user model): the candidates are recipes
  `{"family": "derived", "drop": [...], "width_ratio": r, ...}` applied to a copy of the teacher:
  residual blocks replaced by nn.Identity, then channels removed with Torch-Pruning.

Every candidate is a JSON-serialisable record, so a run directory can keep it and rebuild the model
(from the teacher's copy for the "derived" family).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from edgekd.io import first_line
from edgekd.models.arch import resolve_arch, scale_width
from edgekd.models.modes import eval_mode
from edgekd.models.profile import count_params

log = logging.getLogger(__name__)

ORIGIN = "teacher-derived"
DERIVED_FAMILY = "derived"
DEFAULT_WIDTH_RATIOS = (0.25, 0.5, 0.75)


# ---------------------------------------------------------------------------------------------
# Built-in teacher records


def derive_from_record(
    teacher_record: dict[str, Any] | str,
    channel_multiple: int,
    width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS,
) -> list[dict[str, Any]]:
    """Records cut from a built-in teacher: every depth plan (see `_depth_plans`) at full width and
    at each of `width_ratios`, widths rounded to `channel_multiple`, the teacher itself left out.
    An unknown family gives [] and a warning: search goes on with its own candidates."""
    record = resolve_arch(teacher_record) if isinstance(teacher_record, str) else teacher_record
    family = record.get("family")
    if family not in _DEPTH_ACCESS:
        log.warning(
            "teacher-derived candidates skipped: no depth rule for family %r (known: %s)",
            family, ", ".join(sorted(_DEPTH_ACCESS)),
        )
        return []
    get_depths, set_depths = _DEPTH_ACCESS[family]
    depths = get_depths(record)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for ratio in _ratios(width_ratios):
        # Width 1.0 still goes through scale_width: every candidate meets the target's multiple.
        thinned = scale_width(record, ratio, channel_multiple)
        for plan in _depth_plans(depths):
            if ratio == 1.0 and plan == depths:
                continue  # the teacher itself is no student
            candidate = {**set_depths(thinned, plan), "origin": ORIGIN}
            key = json.dumps(candidate, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(candidate)
    log.info("%d teacher-derived candidates from the %s teacher record", len(out), family)
    return out


def _depth_plans(depths: list[int]) -> list[list[int]]:
    """The teacher's depths, uniform cuts (every stage capped at k blocks) and "one block fewer in
    stage i": linear in depth and stage count, where all per-stage combinations would explode.
    A stage keeps at least one block: its first block carries the stride and width change."""
    plans = [list(depths)]
    for cap in range(max(depths, default=1) - 1, 0, -1):
        plans.append([min(d, cap) for d in depths])
    for index, depth in enumerate(depths):
        if depth > 1:
            plans.append([*depths[:index], depth - 1, *depths[index + 1 :]])
    unique: list[list[int]] = []
    for plan in plans:
        if plan not in unique:
            unique.append(plan)
    return unique


def _resnet_depths(record: dict[str, Any]) -> list[int]:
    return list(record["depths"])


def _with_resnet_depths(record: dict[str, Any], depths: list[int]) -> dict[str, Any]:
    return {**record, "depths": list(depths)}


def _mobilenet_depths(record: dict[str, Any]) -> list[int]:
    return [stage["depth"] for stage in record["stages"]]


def _with_mobilenet_depths(record: dict[str, Any], depths: list[int]) -> dict[str, Any]:
    stages = [{**stage, "depth": depth} for stage, depth in zip(record["stages"], depths)]
    return {**record, "stages": stages}


_DEPTH_ACCESS: dict[str, tuple[Callable, Callable]] = {
    "resnet": (_resnet_depths, _with_resnet_depths),
    "mobilenet": (_mobilenet_depths, _with_mobilenet_depths),
}


def _ratios(width_ratios: Iterable[float]) -> list[float]:
    ratios = sorted({float(r) for r in width_ratios} | {1.0}, reverse=True)
    if ratios[-1] <= 0:
        raise ValueError(f"width ratios must be in (0, 1]: {sorted(width_ratios)}")
    return [r for r in ratios if r <= 1.0]


# ---------------------------------------------------------------------------------------------
# Any traceable teacher module


@dataclass(frozen=True)
class DerivedCandidate:
    """A serialisable `record` and `build(teacher) -> nn.Module`, which applies it to a copy of
    the teacher (the teacher itself is left untouched)."""

    record: dict[str, Any]
    build: Callable[[nn.Module], nn.Module]


def derive_from_module(
    teacher: nn.Module,
    example_input: torch.Tensor,
    channel_multiple: int,
    width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS,
) -> list[DerivedCandidate]:
    """Candidates cut from a teacher module, each one built once here so that every candidate
    returned is known to build and run. A teacher that cannot be traced or pruned gives [] and one
    WARNING: teacher-derived candidates are an extra, never a reason to stop the search."""
    if isinstance(teacher, torch.jit.ScriptModule):
        _skip("a TorchScript teacher has no Python modules to trace or prune")
        return []
    example = example_input[:1].detach().clone()  # one sample traces the same graph, cheaper
    try:
        with torch.no_grad():
            reference = _output(teacher, example)
        idle = idle_layers(teacher, example)
        blocks = droppable_blocks(teacher, example)
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot derive from this teacher
        _skip(f"tracing the teacher failed: {first_line(exc)}")
        return []
    if idle:
        # Torch-Pruning follows the one path the example takes: a layer off that path keeps its
        # channels while its neighbours lose theirs, and the student breaks when the path changes.
        _skip(f"{len(idle)} layer(s) with weights did not run on the example input ({', '.join(idle[:3])}): "
              "control flow that depends on the data or on training mode cannot be cut along one trace")
        return []
    teacher_params = count_params(teacher)
    candidates: list[DerivedCandidate] = []
    failures: list[str] = []
    for ratio in _ratios(width_ratios):
        for drop in _drop_plans(blocks):
            if ratio == 1.0 and not drop:
                continue  # the teacher itself is no student
            record = {
                "family": DERIVED_FAMILY,
                "origin": ORIGIN,
                "drop": drop,
                "width_ratio": ratio,
                "channel_multiple": channel_multiple,
            }
            build = functools.partial(build_derived, record, example_input=example)
            try:
                model = build(teacher)
                with torch.no_grad():
                    shape = _output(model, example).shape
            except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises many kinds
                failures.append(first_line(exc))
                continue
            if shape != reference.shape:
                failures.append(f"output shape {tuple(shape)} != {tuple(reference.shape)}")
            elif count_params(model) >= teacher_params:
                log.debug("derived %s is no smaller than the teacher; left out", record)
            else:
                candidates.append(DerivedCandidate(record, build))
    if failures and not candidates:
        _skip(f"pruning the teacher failed: {failures[0]}")
    elif failures:
        log.warning("%d teacher-derived candidates skipped: %s", len(failures), failures[0])
    log.info(
        "%d teacher-derived candidates from the teacher module (%d droppable blocks)",
        len(candidates), len(blocks),
    )
    return candidates


def build_derived(
    record: dict[str, Any],
    teacher: nn.Module,
    example_input: torch.Tensor,
    channel_multiple: int | None = None,
) -> nn.Module:
    """The student `record` describes, cut from a deep copy of `teacher`. Deterministic: blocks are
    replaced by name and channels ranked by weight magnitude, so the same record on the same
    teacher gives the same architecture and weights."""
    if record.get("family") != DERIVED_FAMILY:
        raise ValueError(f"not a {DERIVED_FAMILY!r} record: {record}")
    multiple = record.get("channel_multiple", channel_multiple)
    if multiple is None or (channel_multiple is not None and channel_multiple != multiple):
        raise ValueError(
            f"channel multiple {channel_multiple} does not match the record's {multiple}"
        )
    model = copy.deepcopy(teacher)
    for name in record["drop"]:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, nn.Identity())
    if record["width_ratio"] < 1.0:
        _thin_(model, example_input[:1], record["width_ratio"], multiple)
    return model


def droppable_blocks(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the blocks that can become nn.Identity, outermost first, in forward order.

    The rule: a submodule called once, whose output has its input's shape, and whose output is
    `input + f(input)` (optionally followed by parameter-free ops such as ReLU), read from its
    torch.fx graph. Removing such a block leaves the skip path, so the layers after it still get
    the kind of features they were trained on (N2N's layer removal relies on this); removing a
    plain layer would feed them features they have never seen. Equal shapes make the Identity fit.
    """
    calls: dict[str, list[tuple[torch.Size, torch.Size]]] = {}
    order: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable:
        def record(_module: nn.Module, args: tuple, output: Any) -> None:
            order.setdefault(name, len(order))
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                calls.setdefault(name, []).append((args[0].shape, output.shape))
            else:
                calls.setdefault(name, []).append((torch.Size([-1]), torch.Size([-2])))

        return record

    for name, module in model.named_modules():
        if name:  # the whole model is never a block to drop
            handles.append(module.register_forward_hook(hook(name)))
    _forward_then_remove(model, example_input, handles)

    chosen: list[str] = []
    # named_modules() lists a parent before its children (hooks fire children first), so a
    # Sequential holding one residual block is chosen over the block, and never both.
    for name, module in model.named_modules():
        if name not in calls or any(name.startswith(outer + ".") for outer in chosen):
            continue  # never called, or inside a block already chosen
        shapes = calls[name]
        if len(shapes) == 1 and shapes[0][0] == shapes[0][1] and _is_residual(module):
            chosen.append(name)
    return sorted(chosen, key=order.get)


def idle_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the modules holding weights of their own that an eval-mode forward pass on
    `example_input` never calls: a branch taken for other inputs, or an auxiliary head that runs in
    training only."""
    called: set[str] = set()
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: called.add(name))
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    _forward_then_remove(model, example_input, handles)
    return [name for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False)) and name not in called]


def _is_residual(module: nn.Module) -> bool:
    if not list(module.children()) and type(module).__module__.startswith("torch.nn"):
        return False  # a built-in layer (Conv2d, ReLU, ...) has no skip path
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow and the like
        log.debug("%s not traceable by torch.fx: %s", type(module).__name__, first_line(exc))
        return False
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    outputs = [node for node in graph.nodes if node.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return False
    owner = dict(module.named_modules())
    node = outputs[0].args[0]
    # Walk back through parameter-free single-input ops (the ReLU after the sum).
    while len(node.all_input_nodes) == 1 and node is not inputs[0] and _parameter_free(node, owner):
        node = node.all_input_nodes[0]
    if not _is_add(node):
        return False
    return any(_skip_of(arg, inputs[0], owner) for arg in node.all_input_nodes)


def _parameter_free(node: fx.Node, owner: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return not any(True for _ in owner[node.target].parameters())
    return node.op in ("call_function", "call_method")


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_")


def _skip_of(node: fx.Node, source: fx.Node, owner: dict[str, nn.Module]) -> bool:
    """Whether `node` is the block's input itself, or it through an Identity (a ResNet shortcut)."""
    while node is not source:
        is_identity = node.op == "call_module" and isinstance(
            owner[node.target], (nn.Identity, nn.Dropout)
        )
        if not is_identity or len(node.all_input_nodes) != 1:
            return False
        node = node.all_input_nodes[0]
    return True


def _drop_plans(blocks: list[str]) -> list[list[str]]:
    """The same plans as `_depth_plans`, with a block's parent module standing in for a stage:
    none dropped, every parent cut to its first k droppable blocks, one block fewer in a parent."""
    stages: dict[str, list[str]] = {}
    for name in blocks:
        stages.setdefault(name.rpartition(".")[0], []).append(name)
    plans: list[list[str]] = [[]]
    for keep in range(max((len(b) for b in stages.values()), default=0) - 1, -1, -1):
        plans.append([name for stage in stages.values() for name in stage[keep:]])
    for stage in stages.values():
        plans.append([stage[-1]])
    unique: list[list[str]] = []
    for plan in plans:
        plan = sorted(plan, key=blocks.index)
        if plan not in unique:
            unique.append(plan)
    return unique


def _thin_(model: nn.Module, example_input: torch.Tensor, width_ratio: float, multiple: int) -> None:
    """Remove channels in place with Torch-Pruning, keeping the classifier's outputs."""
    import torch_pruning as tp  # heavy import; only teacher-derived search needs it

    layers = _layers_in_forward_order(model, example_input)
    classifier = layers[-1]  # its outputs are the model's outputs: never pruned
    # One ratio per layer rather than one global 1 - width_ratio: Torch-Pruning's round_to rounds
    # the kept channels *down*, which takes a 16-channel layer at ratio 0.25 and multiple 8 to 0.
    # Keeping ceil(width * ratio) to the multiple matches scale_width for built-in records; the
    # +0.5 guards int() in Torch-Pruning against float error (int(10 * 0.3) == 2).
    ratios = {}
    for layer in layers[:-1]:
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        keep = _kept_channels(width, width_ratio, multiple)
        if keep < width:
            ratios[layer] = 1.0 - (keep + 0.5) / width
    if not ratios:
        return
    was_training = model.training
    model.eval()  # batch-norm statistics stay as the teacher learned them while tracing
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # the dependency graph is read from autograd: a frozen teacher has none
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                model,
                example_input,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=0.0,
                pruning_ratio_dict=ratios,
                ignored_layers=[classifier],
                round_to=multiple,
            )
            pruner.step()
    finally:
        model.train(was_training)


def _kept_channels(width: int, ratio: float, multiple: int) -> int:
    if width <= multiple:
        return width  # too narrow to thin without leaving the multiple
    wanted = math.ceil(round(width * ratio / multiple, 6)) * multiple
    return min(max(wanted, multiple), width // multiple * multiple)


def _layers_in_forward_order(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    layers: list[nn.Module] = []
    handles = [
        module.register_forward_hook(lambda m, _i, _o: layers.append(m) if m not in layers else None)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    _forward_then_remove(model, example_input, handles)
    if not layers:
        raise ValueError("the teacher has no Conv2d or Linear layer to thin")
    return layers


def _forward_then_remove(model: nn.Module, example_input: torch.Tensor, handles: list) -> None:
    """One eval-mode forward pass for the forward hooks behind `handles`, which are removed after
    it even when it fails."""
    try:
        with torch.no_grad():
            _output(model, example_input)
    finally:
        for handle in handles:
            handle.remove()


def _output(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        out = model(example_input)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the teacher returns {type(out).__name__}, not one tensor")
    return out


def _skip(reason: str) -> None:
    log.warning("teacher-derived candidates skipped: %s", reason)
