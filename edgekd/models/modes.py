"""Running a model in eval mode for a moment (a trace, a shape probe, a hooked pass) and giving it
back in the mode it was in: callers hand in models they do not own, mid-training or not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (batch norm statistics stay put) until the block ends, then in its
    previous train/eval mode again, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def eval_forward(model: nn.Module, x: torch.Tensor):
    """One forward pass in eval mode without autograd (for forward hooks, shapes, outputs)."""
    with eval_mode(model), torch.no_grad():
        return model(x)
