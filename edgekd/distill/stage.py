"""Train the chosen student from the teacher: the recipe's KD loss (distill.loss) in fp32, then,
when the target deploys INT8, quantization-aware training with the target's own quantizer and the
same KD loss.

Teacher outputs are computed once per (teacher, data, augmentation, top-k) and cached on disk
(edgekd.distill.teacher_outputs), then looked up by sample index and epoch, so the teacher does not run in
any step for the logit loss, nor again in a later run with the same key. With distill.augment the
student sees each epoch's deterministic augmentation, the one the cached teacher saw. A feature loss
(distill.feature_loss: FitNets, attention transfer, ND) adds to it; teacher features are too big
to cache, so then the teacher runs once per step. Its layer names are checked against both models
before any training, and its adapters are trained with the student, in fp32 and in QAT, and never
saved with it. The student starts from distill.init (random, the teacher's weights, a checkpoint).

INT8 starts from the target quantizer's PTQ, calibrated on distill.calibration (a manifest) or the
first training images; with distill.sensitivity_threshold_pt, layers whose INT8 costs more than
that are kept in float (edgekd/quantizers/sensitivity.py, report in distill/sensitivity.json).
distill.mode "qat" then trains it with the same KD loss; "ptq" ships the calibrated model as is.

Under torchrun (ctx.world) this stage runs on every rank: the frozen teacher is replicated on each
(never wrapped in DDP), the student (and in QAT its fake-quantized copy) trains in DDP on each
rank's shard of the data (edgekd/training/loop.py). Rank 0 alone resolves the teacher first (it may
train and cache it), computes missing teacher-output epochs, runs the sensitivity sweep and writes
the checkpoints, while the others wait and then read what it wrote.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from edgekd.distill.feature_distiller import FeatureDistiller
from edgekd.distill.feature_losses import choose_layer_pairs
from edgekd.distill.int8 import calibration_inputs, qat_device_for, quantize_student
from edgekd.distill.losses import make_kd_loss
from edgekd.distill.student_init import check_init, initialise_student_
from edgekd.distill.teacher_outputs import teacher_outputs_for_run
from edgekd.io import save_torch
from edgekd.models.student import student_from_record
from edgekd.quantizers import get_quantizer
from edgekd.results import DistillResult
from edgekd.run import RunContext
from edgekd.training import evaluate_accuracy, fit

log = logging.getLogger(__name__)

FP32_CHECKPOINT = "student_fp32.pt"
INT8_CHECKPOINT = "student_int8.pt"


def run(ctx: RunContext) -> DistillResult:
    settings = ctx.recipe.distill
    objective = make_kd_loss(settings.loss, settings)  # an unknown name fails before any work
    check_init(settings.init)
    data = ctx.data
    arch = ctx.result("search").chosen_arch
    out_dir = ctx.stage_dir("distill")
    world = ctx.world
    world.on_main(lambda: ctx.teacher)  # rank 0 may train and cache it; the others then load that
    teacher = ctx.teacher

    calibration = calibration_inputs(ctx)  # a bad manifest fails before training, not after
    torch.manual_seed(ctx.spec.seed)
    student = student_from_record(ctx, arch)
    init = initialise_student_(student, arch, settings.init, teacher.model, teacher.arch, data.train.head(2))
    features = make_feature_distiller(settings, student, teacher.model, data)  # bad layer names fail here
    teacher_outputs = teacher_outputs_for_run(ctx, teacher.model, max(settings.epochs, settings.qat_epochs))

    def kd_loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        loss = objective(logits, teacher_outputs.logits(index, epoch).to(logits.device), labels)
        if features is not None:  # the teacher runs on the batch the student just saw (same augmentation)
            loss = loss + features.loss(labels)
        return loss

    extra = [features] if features is not None else []
    device = ctx.train_device
    log.info("distill: training on %s%s", device.describe(),
             f", {world.size} torchrun processes (DDP)" if world.active else "")
    with _watched(features, student):
        fp32 = fit(student, data.train, data.val, kd_loss, epochs=settings.epochs, lr=settings.lr,
                   batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
                   weight_decay=settings.weight_decay, desc="distill fp32", extra_modules=extra,
                   augment=teacher_outputs.inputs, device=device,
                   max_steps_per_epoch=settings.max_steps_per_epoch, world=world)
    teacher.model.to("cpu")  # a feature loss moved it to the training device
    world.on_main(lambda: save_torch(student.state_dict(), out_dir / FP32_CHECKPOINT))
    result = DistillResult(
        arch=arch["name"], teacher_val_accuracy=teacher.val_accuracy, fp32_val_accuracy=fp32.best_val_accuracy,
        fp32_epochs=fp32.epochs_run, fp32_history=fp32.history, loss=settings.loss, init=init,
        teacher_cache=str(teacher_outputs.directory), augment=settings.augment,
        fp32_checkpoint=f"distill/{FP32_CHECKPOINT}", processes=world.size,
    )
    if features is not None:
        result.feature_kd = {"loss": features.kind, "weight": features.weight,
                             "student_layers": features.pairs.student, "teacher_layers": features.pairs.teacher}
    if ctx.target.precision == "int8":
        quantizer = get_quantizer(ctx.target.quantizer)
        int8_model = quantize_student(ctx, student, calibration, result)  # a copy: student stays fp32
        result.int8_ptq_val_accuracy = evaluate_accuracy(int8_model, data.val, world=world)
        result.int8_mode, result.quantizer = settings.mode, ctx.target.quantizer
        result.calibration = settings.calibration or f"first {len(calibration)} training images"
        if settings.mode == "qat":
            qat_device = qat_device_for(int8_model, device, ctx.target.quantizer, calibration[:2])
            with _watched(features, int8_model):  # the same layer names in the fake-quantized copy
                qat = fit(int8_model, data.train, data.val, kd_loss, epochs=settings.qat_epochs, lr=settings.qat_lr,
                          batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
                          weight_decay=settings.weight_decay, desc="distill int8 (QAT)", extra_modules=extra,
                          augment=teacher_outputs.inputs, device=qat_device,
                          max_steps_per_epoch=settings.max_steps_per_epoch, world=world)
            teacher.model.to("cpu")
            result.int8_val_accuracy, result.int8_epochs, result.int8_history = (
                qat.best_val_accuracy, qat.epochs_run, qat.history)
        else:
            result.int8_val_accuracy, result.int8_epochs, result.int8_history = result.int8_ptq_val_accuracy, 0, []
        world.on_main(lambda: quantizer.save_int8(int8_model, out_dir / INT8_CHECKPOINT))
        result.int8_checkpoint = f"distill/{INT8_CHECKPOINT}"
    if features is not None:
        features.close()
    return result


def make_feature_distiller(settings: Any, student: torch.nn.Module, teacher: torch.nn.Module,
                           data: Any) -> FeatureDistiller | None:
    """The recipe's feature-KD term, its layers checked against both models; None when off."""
    if settings.feature_loss is None:
        return None
    example = data.train.head(2)
    pairs = choose_layer_pairs(settings.feature_loss, student, teacher, settings.feature_layers,
                               settings.teacher_layers, example)
    return FeatureDistiller(settings.feature_loss, pairs, student, teacher, example,
                            weight=settings.feature_weight, train=data.train, num_classes=data.num_classes)


def _watched(features: FeatureDistiller | None, model: torch.nn.Module):
    return features.watch(model) if features is not None else contextlib.nullcontext()


def summary(result: DistillResult) -> str:
    text = f"{result.arch}: fp32 val accuracy {result.fp32_val_accuracy:.4f}"
    if result.int8_val_accuracy is not None:
        text += f", int8 val accuracy {result.int8_val_accuracy:.4f}"
    return text + f" (teacher {result.teacher_val_accuracy:.4f})"
