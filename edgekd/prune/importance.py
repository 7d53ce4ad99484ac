"""Torch-Pruning importance criteria by the name a recipe uses (`prune.importance`).

- magnitude: the group's L2 weight norm per channel (Li et al. 2017, grouped as in DepGraph);
- taylor: first-order Taylor |w * dL/dw| (Molchanov et al. 2019); needs gradients, so a batch;
- bn_scale: |gamma| of the batch norms in the group (Network Slimming, Liu et al. 2017); a group
  without batch norm gets no score and is left unpruned (listed as skipped);
- lamp: LAMP's layer-adaptive normalised magnitude (Lee et al. 2021).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.errors import UserError

IMPORTANCES = ("magnitude", "taylor", "bn_scale", "lamp")


def check_importance(name: str) -> None:
    """UserError for an unknown name, with the closest known one."""
    if name not in IMPORTANCES:
        close = difflib.get_close_matches(str(name), IMPORTANCES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown pruning importance {name!r}{hint}; known: {', '.join(IMPORTANCES)}")


def make_importance(name: str):
    """A fresh Torch-Pruning importance object for `name` (one of IMPORTANCES)."""
    check_importance(name)
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.LAMPImportance(p=2)


def needs_gradients(name: str) -> bool:
    return name == "taylor"


def accumulate_gradients_(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Weight gradients of the cross-entropy on (x, y) for Taylor importance, in eval mode so batch
    norm statistics stay as trained. Without labels the model's own predictions stand in: the
    gradient then says which channels the current decisions rest on."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logits = model(x)
        target = logits.argmax(1).detach() if y is None else y
        F.cross_entropy(logits, target).backward()
    model.train(was_training)
