"""Checking the torch module names a user asks a quantizer to leave in float.

Every quantizer takes `exclude`: names from `model.named_modules()` ("layers.0.conv"), the one
naming scheme a user can read off their own model; each quantizer maps them to its own names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn

from edgekd.errors import UserError

# Module types whose weights every edgekd quantizer (NNCF, ModelOpt, coremltools) quantizes: the
# layers a sensitivity analysis considers when the caller names none.
WEIGHTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.Linear)


def check_exclude(model: nn.Module, exclude: Iterable[str]) -> list[str]:
    """`exclude` as a sorted list without duplicates, or a UserError naming each unknown module
    with the model's closest module names."""
    names = sorted(set(exclude))
    known = [name for name, _ in model.named_modules() if name]
    unknown = [name for name in names if name not in set(known)]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hints.append(f"{name!r} (close: {', '.join(close)})" if close else repr(name))
        raise UserError(
            f"cannot leave {', '.join(hints)} unquantized: no such module in the model; "
            f"use names from model.named_modules(), e.g. {', '.join(known[:5])}"
        )
    return names


def weighted_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution and linear modules, in definition order."""
    return [name for name, module in model.named_modules() if name and isinstance(module, WEIGHTED_TYPES)]
