"""Parameter and multiply-accumulate counts of a torch model, for reports and search."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models.modes import eval_forward


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """MACs of one forward pass at batch 1, from Conv2d and Linear layers (what dominates a CNN).
    None for models whose layers cannot be hooked (TorchScript)."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    total = 0

    def on_conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    def on_linear(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(on_linear))
    try:
        eval_forward(model, torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total
