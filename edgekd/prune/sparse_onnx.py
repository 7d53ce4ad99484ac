"""Does an exported ONNX still hold the 2:4 pattern TensorRT is to exploit?

Export can lose the pattern silently: a retraining step after the masks were folded (QAT), or an
exporter that rewrites weights. Batch norm folded into a convolution scales whole output channels,
and symmetric INT8 (zero point 0, what TensorRT runs) maps 0 to 0, so a correct export keeps every
zero. This reads each Conv / Gemm / MatMul weight, through the Q/DQ and Identity/Transpose nodes
in front of it, and checks every group of four along the reduction axis. Needs only `onnx`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import MissingDependencyError


@dataclass(frozen=True)
class OnnxWeight:
    node: str  # the ONNX node's name
    layer: str | None  # the torch module it came from, read from the exporter's scope name
    op: str
    shape: tuple[int, ...]  # in torch's layout: [out, in, ...]
    is_2_4: bool


@dataclass
class OnnxSparsityCheck:
    weights: list[OnnxWeight]
    missing: list[str]  # expected layers with no weight found in the ONNX
    dense: list[str]  # expected layers whose weight lost the pattern

    @property
    def ok(self) -> bool:
        return not self.missing and not self.dense

    def to_dict(self) -> dict:
        return {"ok": self.ok, "missing": self.missing, "dense": self.dense,
                "sparse_2_4_nodes": [w.node for w in self.weights if w.is_2_4]}


def check_onnx_2_4(path: str | Path, expected: dict[str, Sequence[int]]) -> OnnxSparsityCheck:
    """The 2:4 state of every weight in the ONNX at `path`, and which `expected` layers (torch
    module name -> weight shape, as torch holds it) are missing from it or no longer 2:4.

    A weight is matched to its layer by the exporter's scope name; where a graph rewrite renamed
    the scopes (ModelOpt's Q/DQ export goes through torch.fx), by shape among the weights not yet
    matched, preferring one that is 2:4: a layer that was never sparsified is not 2:4 by chance."""
    weights = onnx_weights(path)
    claimed: set[int] = set()
    missing, dense = [], []
    for name, shape in expected.items():
        index = next((i for i, w in enumerate(weights) if w.layer == name and i not in claimed), None)
        if index is None:
            same = [i for i, w in enumerate(weights) if w.shape == tuple(shape) and i not in claimed]
            index = next((i for i in same if weights[i].is_2_4), same[0] if same else None)
        if index is None:
            missing.append(name)
            continue
        claimed.add(index)
        if not weights[index].is_2_4:
            dense.append(name)
    return OnnxSparsityCheck(weights, missing, dense)


def onnx_weights(path: str | Path) -> list[OnnxWeight]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError("onnx", "onnx") from exc
    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = _constant_through(node.input[1], constants, producers)
        if weight is None:
            continue  # an activation x activation MatMul, not a weight
        if _reduction_axis(node, weight) == weight.ndim - 2:
            weight = np.swapaxes(weight, -1, -2)  # [K, N] -> torch's [out, in]
        # In torch's layout the reduction (input-channel) axis is 1 for convolutions and linears.
        found.append(OnnxWeight(node.name, layer_of_node(node.name), node.op_type, tuple(weight.shape),
                                _is_2_4(weight, 1)))
    return found


def _constant_through(name: str, constants: dict, producers: dict) -> np.ndarray | None:
    """The constant behind a weight input, followed back through the ops that keep each element's
    zero-ness: Q/DQ (symmetric, zero point 0), Identity, Cast, Transpose (applied)."""
    perms = []
    while name not in constants:
        node = producers.get(name)
        if node is None or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast",
                                                "Transpose"):
            return None
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            perms.append(perm)
        name = node.input[0]
    value = constants[name]
    for perm in reversed(perms):
        value = np.transpose(value, perm)
    return value


def _reduction_axis(node, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 1  # [K, C, R, S]: TensorRT's 2:4 runs along the input channels C
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1 if trans_b else 0
    return weight.ndim - 2  # MatMul: B is [..., K, N]


def _is_2_4(weight: np.ndarray, axis: int) -> bool:
    moved = np.moveaxis(weight, axis, -1)
    if moved.shape[-1] % 4:
        return False
    return bool(((moved.reshape(-1, 4) == 0).sum(axis=1) >= 2).all())


def layer_of_node(node_name: str) -> str | None:
    """The torch module name in the scope name the TorchScript exporter gives a node:
    "/stages/stages.2/stages.2.0/conv2/conv2.0/Conv" -> "stages.2.0.conv2.0". Each scope is the
    attribute name, prefixed by its parent's scope when the parent is a container."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return None
    components: list[str] = []
    previous = ""
    for scope in parts[:-1]:  # the last part is the op ("Conv", "Gemm", ...)
        components.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(components)
