"""Accuracy recovery after pruning: fine-tune the pruned student with KD, with labels only, or not.

KD uses the distill stage's objective, `edgekd.distill.losses.make_kd_loss(recipe.distill.loss,
recipe.distill)` (hinton / dist / dkd with the recipe's weights), handed in as `kd_loss`: stages do
not import each other (tests/test_imports.py), so the caller builds it. It is applied against the
teacher's logits, computed once per training image: no augmentation here, so one pass of the
teacher serves every epoch. For 2:4 sparsity the teacher is
the dense model itself. The loop is edgekd.training.fit (AdamW, cosine, early stopping on the
validation split, best weights kept), the same as distillation's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import Split
from edgekd.errors import UserError
from edgekd.training import FitResult, TrainDevice, fit, predict_logits
from edgekd.training.device import CPU

log = logging.getLogger(__name__)

RECOVERIES = ("kd", "labels", "none")

# (student_logits, teacher_logits, labels) -> loss: what make_kd_loss returns
KDLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def check_recovery(mode: str) -> None:
    if mode not in RECOVERIES:
        raise UserError(f"unknown prune recovery {mode!r}; known: {', '.join(RECOVERIES)}")


def recover_(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    mode: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.0,
    patience: int | None = None,
    kd_loss: KDLoss | None = None,
    teacher: nn.Module | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_outputs=None,
    device: TrainDevice = CPU,
    desc: str | None = None,
) -> FitResult | None:
    """Fine-tune `model` in place; None for mode "none".

    For "kd", give `kd_loss` and one of: `teacher_outputs` (the distill stage's teacher-output
    cache, edgekd.distill.teacher_outputs: cached logits per sample and epoch, and the epoch's
    augmentation, which the student then sees too), the `teacher` itself, or its precomputed
    `teacher_logits` on `train` (same order)."""
    check_recovery(mode)
    if mode == "none" or epochs < 1:
        return None
    augment = None
    if mode == "kd" and teacher_outputs is not None:
        if kd_loss is None:
            raise ValueError("KD recovery needs kd_loss (edgekd.distill.losses.make_kd_loss)")
        objective, augment = kd_loss, teacher_outputs.inputs

        def loss_fn(logits, labels, index, epoch):
            return objective(logits, teacher_outputs.logits(index, epoch).to(logits.device), labels)
    elif mode == "kd":
        if teacher_logits is None:
            if teacher is None:
                raise ValueError("KD recovery needs the teacher or its logits on the training split")
            teacher_logits = predict_logits(teacher, train)  # a Split: streamed batch by batch
        if len(teacher_logits) != len(train):
            raise ValueError(f"{len(teacher_logits)} teacher logits for {len(train)} training images")
        if kd_loss is None:
            raise ValueError("KD recovery needs kd_loss (edgekd.distill.losses.make_kd_loss)")
        objective = kd_loss
        cached = teacher_logits.detach()

        def loss_fn(logits, labels, index, _epoch):
            return objective(logits, cached[index], labels)
    else:
        def loss_fn(logits, labels, _index, _epoch):
            return F.cross_entropy(logits, labels)

    result = fit(model, train, val, loss_fn, epochs=epochs, lr=lr, batch_size=batch_size,
                 patience=patience if patience is not None else epochs, seed=seed,
                 weight_decay=weight_decay, desc=desc or f"prune recovery ({mode})", augment=augment,
                 device=device)
    log.info("prune recovery (%s): best val accuracy %.4f at epoch %d of %d", mode, result.best_val_accuracy,
             result.best_epoch, result.epochs_run)
    return result
