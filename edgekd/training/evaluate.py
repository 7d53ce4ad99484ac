"""Accuracy and outputs of a torch model on a split, batch by batch (a split may stream from disk),
on the device the model's weights are on.

Under torchrun (`world`), each rank counts the correct predictions on its shard of the split and
the counts are summed: every rank gets the same accuracy, exactly the one a single process would
compute with the same weights, in 1/N of the time. The ranks must hold equal weights and buffers
(edgekd/training/loop.py makes sure)."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.data import Split
from edgekd.training.distributed import SINGLE, World


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 256, *, world: World = SINGLE) -> float:
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct, counted = 0, 0
    with torch.no_grad():
        for images, labels, _ in split.batches(split.inference_batch(batch_size), shard=world.shard(equal=False)):
            logits = model(images.to(device, non_blocking=True))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            counted += len(labels)
    model.train(was_training)
    correct, counted = world.sum([correct, counted])
    return correct / max(1, counted)


def predict_logits(model: nn.Module, x: torch.Tensor | Split, batch_size: int = 256) -> torch.Tensor:
    """Outputs (on the CPU) for a tensor of images or every sample of a split, in order."""
    model.eval()
    device = model_device(model)
    chunks = (x.batches(x.inference_batch(batch_size)) if isinstance(x, Split)
              else ((x[s : s + batch_size], None, None) for s in range(0, len(x), batch_size)))
    with torch.no_grad():
        return torch.cat([model(images.to(device)).float().cpu() for images, _, _ in chunks])
