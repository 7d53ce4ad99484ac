"""One supervised training loop shared by teacher training and distillation.

The loss is a callable of (logits, labels, sample indices, epoch), so distillation can look up
cached teacher outputs by index and augmentation epoch without a second data pipeline; `augment`,
when given, turns each batch's images into that epoch's augmented copies first. Modules trained
beside the model (feature-KD adapters) join the optimizer through `extra_modules` without becoming
part of the model. Early stopping keeps the weights with the best validation accuracy.

The model trains on `device` (edgekd/training/device.py) and is handed back on the CPU: export,
quantizer calibration and saving always start from a CPU copy.

Under torchrun (`world`, edgekd/training/distributed.py) the model and `extra_modules` train in
DistributedDataParallel. Every rank draws the same order each epoch from the same seeded generator
and takes its shard (DistributedSampler's split with set_epoch semantics: a new order each epoch,
disjoint shards, the same number of steps on every rank), batch_size / N samples a step, so one
optimizer step still sees batch_size samples as in one process. After each epoch every rank takes
rank 0's buffers (BatchNorm statistics) and validation is counted over shards and summed: all ranks
see the same accuracy with the same weights, so early stopping and the best epoch agree without a
broadcast, and each rank keeps the same best weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd import interrupt
from edgekd.data import Split
from edgekd.measure import progress
from edgekd.training.device import CPU, TrainDevice
from edgekd.training.distributed import SINGLE, World
from edgekd.training.evaluate import evaluate_accuracy

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
    images_per_s: float = 0.0  # training throughput over all epochs (data loading included)


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
    device: TrainDevice = CPU,
    max_steps_per_epoch: int | None = None,
    world: World = SINGLE,
) -> FitResult:
    """AdamW with cosine decay; stops after `patience` epochs without a better val accuracy and
    leaves the model holding its best weights, on the CPU. `extra_modules` are trained in the same
    optimizer and put in train mode with the model, but are not part of its saved or restored
    weights (the loss function uses them, e.g. FitNets regressors)."""
    generator = torch.Generator().manual_seed(seed)
    model.to(device.device)
    for module in extra_modules:
        module.to(device.device)
    trained = world.wrap(model, extra_modules, device.device)  # `model` itself in one process
    parameters = list(model.parameters()) + [p for m in extra_modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    scaler = device.grad_scaler()
    best_accuracy, best_epoch, best_state = -1.0, -1, None
    history: list[dict[str, float]] = []
    epoch, seen, started = 0, 0, time.perf_counter()
    rank_batch, shard = world.batch_share(batch_size), world.shard()
    samples = shard.length(len(train)) if shard is not None else len(train)
    for epoch in range(1, epochs + 1):
        model.train()
        for module in extra_modules:
            module.train()
        total_loss, batches = 0.0, 0
        steps = (samples + rank_batch - 1) // rank_batch
        if max_steps_per_epoch is not None:
            steps = min(steps, max_steps_per_epoch)
        for step, (images, labels, index) in enumerate(progress(
                train.batches(rank_batch, shuffle=True, generator=generator, shard=shard),
                desc=f"{desc} epoch {epoch}/{epochs}",
                total=steps)):
            if step >= steps:
                break  # a capped epoch: each epoch still draws a new random subset
            interrupt.check()
            if len(index) < 2:  # BatchNorm cannot train on a batch of one
                continue  # (shards have equal lengths: every rank skips the same step)
            images = images.to(device.device, non_blocking=True)
            labels = labels.to(device.device, non_blocking=True)
            if augment is not None:
                images = augment(images, index, epoch - 1)
            with device.autocast():
                loss = loss_fn(trained(images), labels, index, epoch - 1)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total_loss += float(loss.detach())
            batches += 1
            seen += len(index)
        scheduler.step()
        world.share_buffers_([model, *extra_modules], device.device)
        accuracy = evaluate_accuracy(model, val, world=world)
        total_loss, batches = world.sum([total_loss, batches])  # the mean over every rank's batches
        history.append({"epoch": epoch, "loss": total_loss / max(1, batches), "val_accuracy": accuracy})
        # One line per epoch: training takes minutes, and logs (CI, nohup) show no progress bar.
        log.info("%s epoch %d/%d: loss %.4f, val accuracy %.4f",
                 desc, epoch, epochs, history[-1]["loss"], accuracy)
        if on_epoch_end is not None:
            on_epoch_end(epoch, accuracy)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            log.info("%s: early stop at epoch %d (best val accuracy %.4f at epoch %d)", desc, epoch, best_accuracy,
                     best_epoch)
            break
    elapsed = time.perf_counter() - started
    del trained  # DDP's gradient hooks go with it
    seen *= world.size  # every rank trains as many samples
    model.to("cpu")
    for module in extra_modules:
        module.to("cpu")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_accuracy, best_epoch, epoch, history, images_per_s=round(seen / max(elapsed, 1e-9), 1))
