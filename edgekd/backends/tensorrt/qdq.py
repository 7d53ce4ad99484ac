"""Q/DQ ONNX for TensorRT INT8: find the quantizers TensorRT would refuse, rewrite fixable ones.

TensorRT's Q/DQ support is signed INT8 with zero point 0 (symmetric). NNCF quantizes non-negative
activations (after ReLU, image input) as uint8 with zero point 0, which TensorRT rejects, so
`prepare_int8_onnx` rewrites those as int8 with twice the scale: same range, one bit less
resolution. Needs only `onnx` (imported lazily), not TensorRT, so it runs, and is tested, anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgekd.errors import UserError

log = logging.getLogger(__name__)


def prepare_int8_onnx(path: Path) -> None:
    """Make the Q/DQ ONNX at `path` buildable by TensorRT, in place; UserError if it cannot be."""
    import onnx

    onnx_model = onnx.load(str(path))
    if not any(node.op_type == "QuantizeLinear" for node in onnx_model.graph.node):
        raise UserError(
            "TensorRT INT8 needs an explicitly quantized model (Q/DQ nodes), and this one has "
            "none: quantize it first (NNCF or ModelOpt PTQ/QAT); TensorRT 11 removed calibration"
        )
    rewritten = make_qdq_signed_(onnx_model)
    if rewritten:
        log.warning(
            "rewrote %d uint8 quantizers as int8 for TensorRT (same range, one bit less "
            "resolution)",
            rewritten,
        )
    problems = qdq_problems(onnx_model)
    if problems:
        raise UserError(
            f"TensorRT cannot run {len(problems)} quantizers of this model: {problems[0]}"
        )
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


def qdq_problems(onnx_model) -> list[str]:
    """Why TensorRT would refuse this model's quantizers (empty list: none, or no quantizers).

    TensorRT runs Q/DQ as signed INT8 with zero point 0 only (symmetric quantization).
    """
    graph = onnx_model.graph
    values = _constant_values(graph)
    problems = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" and not (
            node.op_type == "DequantizeLinear" and node.input[0] in values
        ):
            continue
        label = node.name or node.output[0]
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zero_point is None:
            if node.op_type == "QuantizeLinear":
                problems.append(f"{label}: no zero point, so uint8 (TensorRT needs int8)")
            continue
        if zero_point not in values:
            problems.append(f"{label}: zero point is not a constant")
            continue
        array = values[zero_point]
        if array.dtype != np.int8:
            problems.append(f"{label}: {array.dtype} zero point (TensorRT needs int8)")
        elif np.any(array != 0):
            problems.append(f"{label}: non-zero zero point (TensorRT quantizes symmetrically)")
    return problems


def make_qdq_signed_(onnx_model) -> int:
    """Rewrite uint8 quantizers with zero point 0 as int8 ones; returns how many it rewrote.

    A uint8 quantizer with zero point 0 covers [0, 255 * s]; int8 with scale 255/127 * s covers
    the same range with half the steps. Quantizers with a non-zero zero point are left alone
    (they cannot be made symmetric without changing the range) and stay in qdq_problems().
    """
    from onnx import TensorProto, numpy_helper

    graph = onnx_model.graph
    values = _constant_values(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    rewritten_outputs = set()
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "QuantizeLinear" or node.input[1] not in values:
            continue
        zero_point = (
            values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.uint8(0)
        )
        users = consumers.get(node.output[0], [])
        if zero_point is None or zero_point.dtype != np.uint8 or np.any(zero_point != 0):
            continue
        if not users or any(user.op_type != "DequantizeLinear" for user in users):
            continue  # the uint8 tensor is used as such elsewhere; not ours to reinterpret
        prefix = f"{node.name or node.output[0]}_s8_{index}"
        scale = values[node.input[1]]
        graph.initializer.append(
            numpy_helper.from_array((scale * (255 / 127)).astype(scale.dtype), f"{prefix}_scale")
        )
        graph.initializer.append(
            numpy_helper.from_array(np.zeros(np.shape(zero_point), np.int8), f"{prefix}_zero_point")
        )
        for quant_node in (node, *users):
            quant_node.input[1] = f"{prefix}_scale"
            if len(quant_node.input) > 2:
                quant_node.input[2] = f"{prefix}_zero_point"
            else:
                quant_node.input.append(f"{prefix}_zero_point")
        rewritten_outputs.add(node.output[0])
    for info in graph.value_info:  # the exporter may have recorded the old uint8 type
        if info.name in rewritten_outputs:
            info.type.tensor_type.elem_type = TensorProto.INT8
    return len(rewritten_outputs)


def _constant_values(graph) -> dict[str, np.ndarray]:
    """Initializers, Constant outputs and Identity-of-constant outputs, by tensor name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # nodes are topologically sorted in a valid model
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values
