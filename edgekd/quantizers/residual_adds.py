"""Find the residual adds of a model (torch.fx), the adds TensorRT fuses into a convolution.

TensorRT fuses `conv (+ batch norm) -> add(., skip)` into one INT8 convolution when the skip
input is quantized too; its Q/DQ placement guide therefore asks for a Q/DQ pair on the residual
(skip) input of such an add, and none on the convolution's output. Which input is the residual is
decided as ModelOpt's ONNX quantizer does (graph_utils.build_non_residual_input_map): from the two
inputs' lowest common ancestor, the shorter path is the skip, the longer one the main branch.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
# Layers TensorRT can fuse an add into (batch norm is folded into the convolution before it).
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class ResidualAdd:
    add: fx.Node
    residual: fx.Node  # the skip input, to be quantized
    main: fx.Node  # the convolution branch's output, left unquantized for the fusion
    fused_layer: str  # the convolution (or linear layer) TensorRT fuses the add into


def trace(model: nn.Module) -> fx.GraphModule | None:
    """The model as a GraphModule, or None (logged) when torch.fx cannot trace it."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow and the like; tracing is best effort
        log.warning(
            "cannot trace %s with torch.fx (%s); its residual adds stay unquantized, so "
            "TensorRT runs them in higher precision",
            type(model).__name__,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None


def find_residual_adds(graph_module: fx.GraphModule) -> list[ResidualAdd]:
    modules = dict(graph_module.named_modules())
    found = []
    for node in graph_module.graph.nodes:
        inputs = _tensor_inputs_of_add(node)
        if inputs is None:
            continue
        first, second = inputs
        distances = (_ancestor_distances(first), _ancestor_distances(second))
        common = distances[0].keys() & distances[1].keys()
        if not common:
            continue
        ancestor = min(common, key=lambda a: (distances[0][a] + distances[1][a], a.name))
        if distances[0][ancestor] == distances[1][ancestor]:
            continue  # two branches of equal length: no skip connection to tell apart
        main, residual = (
            (first, second) if distances[0][ancestor] > distances[1][ancestor] else (second, first)
        )
        fused_layer = _weighted_layer(main, modules)
        if fused_layer is not None:
            found.append(ResidualAdd(add=node, residual=residual, main=main, fused_layer=fused_layer))
    return found


def _weighted_layer(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The conv/linear layer that produces `node`, directly or through a batch norm (TensorRT
    folds that into the convolution), or None."""
    if node.op == "call_module" and isinstance(modules.get(node.target), _BATCH_NORM):
        node = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else node
    if node.op == "call_module" and isinstance(modules.get(node.target), _WEIGHTED):
        return str(node.target)
    return None


def _tensor_inputs_of_add(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if not is_add or len(node.args) < 2:
        return None
    first, second = node.args[:2]
    if not isinstance(first, fx.Node) or not isinstance(second, fx.Node) or first is second:
        return None  # an add of a constant is a bias, not a residual connection
    return first, second


def _ancestor_distances(node: fx.Node) -> dict[fx.Node, int]:
    """Shortest number of edges from `node` back to each of its ancestors (itself at 0)."""
    distances = {node: 0}
    frontier = [node]
    while frontier:
        next_frontier = []
        for current in frontier:
            for parent in current.all_input_nodes:
                if parent not in distances:
                    distances[parent] = distances[current] + 1
                    next_frontier.append(parent)
        frontier = next_frontier
    return distances
