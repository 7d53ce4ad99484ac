"""2:4 structured sparsity for TensorRT targets (Target.sparse_2_4: Ampere GPUs, Jetson Orin).

In every group of four consecutive weights along a layer's reduction (input-channel) axis, two are
zero; Ampere's sparse tensor cores skip them. ModelOpt (`modelopt.torch.sparsity`, NVIDIA's ASP)
computes the magnitude masks and keeps them applied while the model is fine-tuned (KD recovery with
the dense model as teacher); `fold_masks` then writes the zeros into plain layers for export.

Only layers TensorRT can accelerate are sparsified. TensorRT times sparse and dense tactics and
keeps the faster, and its maintainers report that sparse convolutions win only when the input
channels C (times the kernel area: a 3x3 kernel counts 9x) and the output channels K are both above
about 256 (NVIDIA/TensorRT#3849, #4065), for at most ~15% end to end on CNNs (#2310). A smaller
layer would lose accuracy for no speed, so `eligible_layers` says for every layer why it is or is
not sparsified. Whether TensorRT picks a sparse tactic for a Q/DQ INT8 layer is decided by the
engine build on the device (NVIDIA/TensorRT#4694 reports cases where it did not); until an engine
ran there, the latency of a 2:4 artifact is labelled "not measured".
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.errors import MissingDependencyError, UserError
from edgekd.target import Target, why_not_measurable

log = logging.getLogger(__name__)

MIN_CHANNELS = 256  # TensorRT's sparse tactics win above about this C (x kernel area) and K
NOT_MEASURED = "not measured"  # the latency label of a 2:4 artifact until it runs under TensorRT


@dataclass(frozen=True)
class SparseLayer:
    name: str
    eligible: bool
    reason: str


def eligible_layers(model: nn.Module, *, min_channels: int = MIN_CHANNELS,
                    exclude: Sequence[str] = ()) -> list[SparseLayer]:
    """Every convolution and linear layer of `model`, with whether TensorRT can run it 2:4 sparse
    faster and why (not). `exclude`: layers kept dense on request (e.g. the classifier)."""
    out = []
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d):
            reduction = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            out.append(_judge(name, layer.out_channels, layer.in_channels, reduction, layer.groups,
                              min_channels, name in exclude))
        elif isinstance(layer, nn.Linear):
            out.append(_judge(name, layer.out_features, layer.in_features, layer.in_features, 1,
                              min_channels, name in exclude))
    return out


def _judge(name, out_ch, in_ch, reduction, groups, min_channels, excluded) -> SparseLayer:
    if excluded:
        return SparseLayer(name, False, "kept dense on request")
    if groups != 1:
        return SparseLayer(name, False, f"grouped convolution ({groups} groups): no sparse tensor-core tactic")
    # ModelOpt's (ASP's) shape rule: K a multiple of 8 and C a multiple of 16.
    if out_ch % 8 or in_ch % 16:
        return SparseLayer(name, False, f"{out_ch}x{in_ch}: 2:4 kernels need output channels in multiples of 8 "
                                        "and input channels in multiples of 16")
    if out_ch < min_channels or reduction < min_channels:
        return SparseLayer(name, False, f"output channels {out_ch}, input channels x kernel area {reduction}: "
                                        f"below {min_channels}, where dense tactics are as fast (NVIDIA/TensorRT#3849)")
    return SparseLayer(name, True, f"output channels {out_ch}, input channels x kernel area {reduction}")


def sparse_latency_source(target: Target) -> str:
    """How the latency of a 2:4 artifact on `target` is labelled: "measured" only where its TensorRT
    engine runs (here or on the device behind the runner); otherwise NOT_MEASURED, never a
    prediction, because the analytical model knows nothing of which tactics TensorRT picks."""
    if target.backend != "tensorrt" or not target.sparse_2_4:
        raise UserError(f"2:4 sparsity runs faster only on TensorRT targets with sparse_2_4; {target.name} is not one")
    return "measured" if why_not_measurable(target) is None else NOT_MEASURED


def sparsify_2_4_(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """Magnitude 2:4 masks on `layers` (ModelOpt "sparse_magnitude"), in place; the masks stay
    enforced while the model trains, until `fold_masks`. Returns the model ModelOpt converted."""
    mts = require_modelopt_sparsity()
    known = {name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    missing = sorted(set(layers) - known)
    if missing:
        raise UserError(f"2:4 sparsity: no convolution or linear layer named {missing}")
    if not layers:
        return model
    # Rules are glob patterns over module names, later ones winning: everything dense, then each
    # chosen layer by its exact name (module names hold no glob characters but "[" in rare cases).
    rules = {"*": None, **{_glob_escape(name): {} for name in layers}}
    config = {"nn.Conv2d": rules, "nn.Linear": rules}
    with contextlib.redirect_stdout(io.StringIO()):  # ModelOpt prints one line per layer
        return mts.sparsify(model, [("sparse_magnitude", config)])


def fold_masks(model: nn.Module) -> nn.Module:
    """The zeros written into plain nn.Conv2d / nn.Linear weights (ModelOpt's export), for ONNX
    export; training afterwards would no longer keep them (use `reapply_masks_` then).

    ModelOpt's record of the sparsity modes is dropped from the result: it is a plain torch model
    now, and ModelOpt refuses to quantize a model holding that record below its root (edgekd's
    INT8 wrapper puts the network below a root)."""
    from modelopt.torch.opt.conversion import ModeloptStateManager

    model = require_modelopt_sparsity().export(model)
    if ModeloptStateManager.is_converted(model):
        ModeloptStateManager.remove_state(model)
    return model


def zero_masks(model: nn.Module, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Where each layer's weight is non-zero, after `fold_masks`: the masks to re-apply after a
    later training step (QAT) that does not keep them."""
    return {name: model.get_submodule(name).weight.detach() != 0 for name in layers}


def reapply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights again, in place. A quantized model may wrap the network
    (edgekd's ModelOpt INT8 model holds it as `network`), so a name is also found as a suffix."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = _layer(model, name).weight
            weight.mul_(mask.to(weight.dtype))


def _layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    matches = [m for full, m in modules.items() if full.endswith("." + name)]
    if len(matches) != 1:
        raise UserError(f"2:4 sparsity: layer {name!r} not found in the model (or found {len(matches)} times)")
    return matches[0]


def is_2_4(weight: torch.Tensor, axis: int = 1) -> bool:
    """Whether every group of four consecutive weights along `axis` has at least two zeros."""
    moved = weight.detach().movedim(axis, -1)
    if moved.shape[-1] % 4:
        return False
    groups = moved.reshape(-1, 4)
    return bool(((groups == 0).sum(dim=1) >= 2).all())


def _glob_escape(name: str) -> str:
    return name.replace("[", "[[]")


def require_modelopt_sparsity():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot find transformers package" and the like
            import modelopt.torch.sparsity as mts
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError("nvidia-modelopt", "tensorrt") from exc
    return mts
