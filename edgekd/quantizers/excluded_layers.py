"""The `exclude` argument every quantizer's prepare_int8 takes: layers kept in floating point.

Names are those of `model.named_modules()` of the float model, the names a user sees when printing
the model; excluding a module keeps everything under it in floating point.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from torch import nn

from edgekd.errors import UserError


def check_excluded(model: nn.Module, exclude: Sequence[str]) -> list[str]:
    """`exclude` as a list, after checking that each name is a module of `model`.

    UserError for an unknown name, listing the closest module names (a typo in a long dotted
    name is the usual cause), or for a bare string (it would be read as one name per character).
    """
    if isinstance(exclude, str):
        raise UserError(f"exclude must be a list of module names, not the string {exclude!r}")
    names = [name for name, _ in model.named_modules() if name]
    known = set(names)
    for name in exclude:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else f"modules: {', '.join(names[:20])}"
            raise UserError(f"exclude: the model has no module named {name!r}; {hint}")
    return list(exclude)
