"""One supervised training loop shared by teacher training and distillation.

The loss is a callable of (logits, labels, sample indices, epoch), so distillation can look up
cached teacher outputs by index and augmentation epoch without a second data pipeline; `augment`,
when given, turns each batch's images into that epoch's augmented copies first. Modules trained beside the model (feature-KD
adapters) join the optimizer through `extra_modules` without becoming part of the model. Early
stopping keeps the weights with the best validation accuracy.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd import interrupt
from edgekd.data import Split
from edgekd.measure import progress

log = logging.getLogger(__name__)

# (logits, labels, sample indices, epoch) -> loss; epoch counts from 0
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# (images, sample indices, epoch) -> the images the model trains on this epoch
AugmentFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            logits = model(split.x[start : start + batch_size])
            correct += int((logits.argmax(1) == split.y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(split))


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int,
    seed: int,
    weight_decay: float = 0.0,
    desc: str = "train",
    on_epoch_end: Callable[[int, float], None] | None = None,
    extra_modules: Sequence[nn.Module] = (),
    augment: AugmentFn | None = None,
) -> FitResult:
    """AdamW with cosine decay; stops after `patience` epochs without a better val accuracy and
    leaves the model holding its best weights. `extra_modules` are trained in the same optimizer
    and put in train mode with the model, but are not part of its saved or restored weights (the
    loss function uses them, e.g. FitNets regressors)."""
    generator = torch.Generator().manual_seed(seed)
    parameters = list(model.parameters()) + [p for m in extra_modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    best_accuracy, best_epoch, best_state = -1.0, -1, None
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for module in extra_modules:
            module.train()
        order = torch.randperm(len(train), generator=generator)
        total_loss, batches = 0.0, 0
        for start in progress(range(0, len(train), batch_size), desc=f"{desc} epoch {epoch}/{epochs}"):
            interrupt.check()
            index = order[start : start + batch_size]
            if len(index) < 2:  # BatchNorm cannot train on a batch of one
                continue
            images = train.x[index]
            if augment is not None:
                images = augment(images, index, epoch - 1)
            loss = loss_fn(model(images), train.y[index], index, epoch - 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            batches += 1
        scheduler.step()
        accuracy = evaluate_accuracy(model, val)
        history.append({"epoch": epoch, "loss": total_loss / max(1, batches), "val_accuracy": accuracy})
        # One line per epoch: training takes minutes, and logs (CI, nohup) show no progress bar.
        log.info("%s epoch %d/%d: loss %.4f, val accuracy %.4f",
                desc, epoch, epochs, history[-1]["loss"], accuracy)
        if on_epoch_end is not None:
            on_epoch_end(epoch, accuracy)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            log.info("%s: early stop at epoch %d (best val accuracy %.4f at epoch %d)", desc, epoch, best_accuracy, best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_accuracy, best_epoch, epoch, history)
