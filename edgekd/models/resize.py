"""Rebuild a pruned model from its saved weights: the unpruned architecture, each layer narrowed to
the shapes in the state dict, then the weights loaded.

A pruned student is saved as a plain state dict (loadable with `weights_only=True`), not as a
pickled module: the run dir then never holds code that runs on load. Its architecture is the
unpruned one (rebuilt from the search's record, or the teacher) with fewer channels, and the saved
tensor shapes say exactly how many, so narrowing each layer to them gives back the pruned model.
Depthwise convolutions stay depthwise (their group count follows their channels); other grouped
convolutions keep their group count, as structured pruning does.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import UserError

# Layers whose channel counts pruning changes, and the attributes that hold them.
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)


def narrow_to_state_dict_(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Narrow `model`'s layers in place to the shapes of `state` and load it (strict). A layer of a
    kind this does not know how to narrow is a UserError naming it."""
    for name, module in model.named_modules():
        shapes = {key: state[f"{name}.{key}" if name else key].shape
                  for key, value in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
                  if value is not None and (f"{name}.{key}" if name else key) in state}
        if not shapes or all(tuple(getattr(module, key).shape) == tuple(shape) for key, shape in shapes.items()):
            continue
        _narrow(module, name, shapes)
    model.load_state_dict(state)
    return model


def _narrow(module: nn.Module, name: str, shapes: dict[str, torch.Size]) -> None:
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        out_channels, in_per_group = shapes["weight"][0], shapes["weight"][1]
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.groups = out_channels if depthwise else module.groups
        module.out_channels, module.in_channels = out_channels, in_per_group * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shapes["weight"]
    elif isinstance(module, _NORMS):
        module.num_features = next(iter(shapes.values()))[0]
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = shapes["weight"][0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(shapes["weight"])
    elif isinstance(module, nn.PReLU):
        module.num_parameters = shapes["weight"][0]
    else:
        raise UserError(f"cannot rebuild the pruned layer {name or '(root)'} ({type(module).__name__}): "
                        "its saved weights have other shapes and edgekd does not know how to narrow it")
    for key, shape in shapes.items():
        if key in module._parameters:
            module._parameters[key] = nn.Parameter(torch.empty(shape), requires_grad=module._parameters[key].requires_grad)
        else:
            module._buffers[key] = torch.empty(shape, dtype=module._buffers[key].dtype)
