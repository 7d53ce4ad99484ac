"""INT8 with NVIDIA ModelOpt (`modelopt.torch.quantization`), the explicit Q/DQ TensorRT builds.

`prepare_int8` returns a fake-quantized copy of the model that follows TensorRT's Q/DQ placement
rules: the inputs and weights of every convolution and linear layer are quantized (signed INT8,
zero point 0, weights per output channel, activations per tensor, max calibration), outputs are
not (TensorRT fuses what follows), batch norm is not (TensorRT folds it into the convolution), and
the skip input of each residual add is quantized, so that TensorRT can fuse the add into the
convolution before it (see residual_adds). The scales are fixed after calibration (PTQ); training
the copy afterwards with the KD loss is QAT, gradients passing the rounding straight through.

Saved as one weights-only torch file: the state dict and ModelOpt's own state (plain data), so
loading never unpickles code. `export_onnx` writes the Q/DQ ONNX TensorRT builds from, and
`edgekd.backends.onnx.compare_with_torch` checks it against the torch model.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import MissingDependencyError, UserError
from edgekd.quantizers import residual_adds
from edgekd.quantizers.exclude import check_exclude

try:
    with warnings.catch_warnings():
        # "Cannot find transformers package": ModelOpt's LLM plugins, which we do not use.
        warnings.simplefilter("ignore")
        import modelopt
        import modelopt.torch.opt as mto
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.nn import (
            QuantInputBase,
            QuantModuleRegistry,
            TensorQuantizer,
        )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependencyError("nvidia-modelopt", "tensorrt") from exc

log = logging.getLogger(__name__)

_FORMAT = "edgekd-modelopt-int8/1"
_BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
# Written out rather than mtq.INT8_DEFAULT_CFG: that one also switches off quantizers by name
# patterns meant for LLMs ("*output_layer*", "*router*", "*proj_out.*", ...), which would silently
# leave a CNN layer of such a name in floating point.
_QUANT_CFG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
        *(
            {"quantizer_name": "*", "parent_class": f"nn.{bn}", "enable": False}
            for bn in _BATCH_NORMS
        ),
    ],
    "algorithm": "max",
}


class ResidualInput(nn.Module):
    """Marks the skip input of a residual add: an identity in float. ModelOpt converts it, like
    any registered layer, into a module that fake-quantizes its input (its input_quantizer gets
    the same configuration as every other activation quantizer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# QuantInputBase is how ModelOpt itself quantizes pooling layers: input quantizer, then forward.
QuantModuleRegistry.register({ResidualInput: "edgekd.ResidualInput"})(QuantInputBase)


class ModelOptInt8Model(nn.Module):
    """The quantized network, wrapped: ModelOpt keeps its state on the module it quantized, and
    the network may be a torch.fx GraphModule (residual quantizers inserted), whose deepcopy drops
    such attributes; a plain module's deepcopy keeps them (training loops copy models)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


_PREFIX = "network."


def prepare_int8(
    model: nn.Module,
    calibration_x: torch.Tensor,
    *,
    batch_size: int = 64,
    exclude: Sequence[str] = (),
) -> ModelOptInt8Model:
    """A fake-quantized copy of `model`, calibrated on `calibration_x` (max of |x| per tensor).

    `exclude`: names from model.named_modules() whose quantizers are disabled (kept in float).
    """
    excluded = check_exclude(model, exclude)
    quantized, residual_names = _with_residual_quantizers(
        copy.deepcopy(model).eval(), lambda r: not _is_under(r.fused_layer, excluded)
    )
    quantized = ModelOptInt8Model(quantized)
    config = _config(excluded)
    batches = [calibration_x[s : s + batch_size] for s in range(0, len(calibration_x), batch_size)]

    def forward_loop(m: nn.Module) -> None:
        with torch.no_grad():
            for batch in batches:
                m(batch)

    # ModelOpt prints "Inserted N quantizers" on stdout (edgekd logs instead) and warns that
    # its LLM export plugins lack the transformers package, which edgekd does not use.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot find transformers package")
        quantized = mtq.quantize(quantized, config, forward_loop=forward_loop)
    log.info(
        "modelopt int8: %d quantizers enabled (%d residual adds), %d modules excluded, "
        "calibrated on %d samples",
        len(enabled_quantizers(quantized)),
        len(residual_names),
        len(excluded),
        len(calibration_x),
    )
    return quantized.eval()


def _config(excluded: list[str]) -> dict:
    config = copy.deepcopy(_QUANT_CFG)
    for name in excluded:
        # Quantizers live inside the layer they quantize ("conv1.weight_quantizer"), so a pattern
        # on the module name disables that layer and everything below it.
        config["quant_cfg"].append({"quantizer_name": f"{_PREFIX}{name}.*", "enable": False})
    return config


def _with_residual_quantizers(
    model: nn.Module, keep: Callable[[residual_adds.ResidualAdd], bool]
) -> tuple[nn.Module, list[str]]:
    """The model with a ResidualInput on the skip input of each residual add that `keep` accepts
    (a GraphModule with the model's own module names), or the model unchanged when there is none
    or it cannot be traced.

    prepare_int8 leaves out an add whose convolution branch ends in an excluded layer: that
    convolution runs in float, so there is no INT8 fusion for a quantized skip input to join."""
    graph_module = residual_adds.trace(model)
    found = residual_adds.find_residual_adds(graph_module) if graph_module is not None else []
    found = [r for r in found if keep(r)]
    if not found:
        return model, []
    names = []
    for residual_add in found:
        name = _residual_name(residual_add)
        graph_module.add_submodule(name, ResidualInput())
        with graph_module.graph.inserting_before(residual_add.add):
            quantized_input = graph_module.graph.call_module(name, (residual_add.residual,))
        residual_add.add.replace_input_with(residual_add.residual, quantized_input)
        names.append(name)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module, names


def _residual_name(residual_add: residual_adds.ResidualAdd) -> str:
    return f"{residual_add.add.name}_residual"  # fx node names are unique within a graph


def _is_under(module_name: str, prefixes: list[str]) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in prefixes)


def enabled_quantizers(model: ModelOptInt8Model) -> list[str]:
    """Names of the model's quantizers that quantize (not disabled), as in the float model
    ("conv1.weight_quantizer"; residual adds' as "<add>_residual.input_quantizer")."""
    return [
        name
        for name, module in model.network.named_modules()
        if isinstance(module, TensorQuantizer) and module.is_enabled
    ]


def save_int8(model: ModelOptInt8Model, path: Path) -> None:
    # Read from the modules rather than kept in an attribute of the network (see ModelOptInt8Model).
    residual_names = [
        name for name, m in model.network.named_modules() if isinstance(m, ResidualInput)
    ]
    checkpoint = {
        "format": _FORMAT,
        "modelopt_version": modelopt.__version__,
        "modelopt_state": mto.modelopt_state(model),  # plain data: configs and quantizer states
        "state_dict": model.state_dict(),
        "residual_quantizers": residual_names,
    }
    torch.save(checkpoint, path)


def load_int8(float_model: nn.Module, path: Path) -> ModelOptInt8Model:
    """Rebuild a saved quantized model on a freshly built float model of the same architecture."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        raise UserError(f"{path} is not an edgekd ModelOpt INT8 checkpoint (save_int8 writes one)")
    saved = checkpoint["residual_quantizers"]
    model, residual_names = _with_residual_quantizers(
        float_model.eval(), lambda r: _residual_name(r) in saved
    )
    if residual_names != saved:
        raise UserError(
            f"{path} was saved from another architecture: its residual adds "
            f"{checkpoint['residual_quantizers']} are not this model's {residual_names}"
        )
    model = ModelOptInt8Model(model)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # ResidualInput holds no tensor to tell ModelOpt the device; the caller moves the model.
        warnings.filterwarnings("ignore", message="Could not identify the device")
        model = mto.restore_from_modelopt_state(model, checkpoint["modelopt_state"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the Q/DQ ONNX TensorRT builds an INT8 engine from (dynamic batch, opset 17, input
    "input", output "logits"); UserError if TensorRT would refuse one of its quantizers
    (backends.tensorrt_qdq.qdq_problems) or it holds a non-standard op."""
    import onnx

    from edgekd.backends import onnx as onnx_backend
    from edgekd.backends.tensorrt.qdq import qdq_problems

    metadata = {"quantizer": f"modelopt {version()}", "precision": "int8", **(metadata or {})}
    path = onnx_backend.export(model, example_input, Path(path), metadata=metadata)
    onnx_model = onnx.load(str(path))
    custom = sorted({node.op_type for node in onnx_model.graph.node if node.domain not in ("", "ai.onnx")})
    problems = qdq_problems(onnx_model)
    if custom or problems:
        raise UserError(
            f"the Q/DQ ONNX at {path} is not TensorRT-ready: "
            + (f"non-standard ops {custom}" if custom else problems[0])
        )
    return path


def version() -> str:
    return modelopt.__version__
