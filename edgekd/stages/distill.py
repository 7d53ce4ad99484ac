"""Train the chosen student from the teacher: the recipe's KD loss (distill.loss) in fp32, then,
when the target deploys INT8, quantization-aware training with the target's own quantizer and the
same KD loss.

Teacher logits are computed once (no augmentation, so they never change) and looked up by
sample index, so the teacher does not run in every step for the logit loss. A feature loss
(distill.feature_loss: FitNets, attention transfer, ND) adds to it; teacher features are too big
to cache, so then the teacher runs once per step. Its layer names are checked against both models
before any training, and its adapters are trained with the student, in fp32 and in QAT, and never
saved with it. The student starts from distill.init (random, the teacher's weights, a checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from edgekd.feature_distiller import FeatureDistiller
from edgekd.kd import make_kd_loss
from edgekd.kd_features import choose_layer_pairs
from edgekd.models import build_model
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.student_init import check_init, initialise_student_
from edgekd.training import evaluate_accuracy, fit, predict_logits

log = logging.getLogger(__name__)

FP32_CHECKPOINT = "student_fp32.pt"
INT8_CHECKPOINT = "student_int8.pt"


def run(ctx: RunContext) -> dict[str, Any]:
    settings = ctx.recipe.distill
    objective = make_kd_loss(settings.loss, settings)  # an unknown name fails before any work
    check_init(settings.init)
    data = ctx.data
    arch = ctx.result("search")["chosen_arch"]
    out_dir = ctx.stage_dir("distill")
    teacher = ctx.teacher

    torch.manual_seed(ctx.spec.seed)
    student = build_model(arch, data.input_shape[0], data.num_classes)
    init = initialise_student_(student, arch, settings.init, teacher.model, teacher.arch, data.train.x[:2])
    features = make_feature_distiller(settings, student, teacher.model, data)  # bad layer names fail here
    teacher_logits = predict_logits(teacher.model, data.train.x)

    def kd_loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        loss = objective(logits, teacher_logits[index], labels)
        if features is not None:
            loss = loss + features.loss(data.train.x[index], labels)
        return loss

    extra = [features] if features is not None else []
    with _watched(features, student):
        fp32 = fit(student, data.train, data.val, kd_loss, epochs=settings.epochs, lr=settings.lr,
                   batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
                   weight_decay=settings.weight_decay, desc="distill fp32", extra_modules=extra)
    torch.save(student.state_dict(), out_dir / FP32_CHECKPOINT)
    metrics: dict[str, Any] = {
        "arch": arch["name"], "teacher_val_accuracy": teacher.val_accuracy,
        "fp32_val_accuracy": fp32.best_val_accuracy, "fp32_epochs": fp32.epochs_run,
        "fp32_history": fp32.history, "loss": settings.loss, "init": init,
    }
    if features is not None:
        metrics["feature_kd"] = {"loss": features.kind, "weight": features.weight,
                                 "student_layers": features.pairs.student,
                                 "teacher_layers": features.pairs.teacher}
    if ctx.target.precision == "int8":
        quantizer = get_quantizer(ctx.target.quantizer)
        calibration = data.train.x[: settings.calibration_samples]
        qat_model = quantizer.prepare_int8(student, calibration)  # a copy: student stays fp32
        metrics["int8_ptq_val_accuracy"] = evaluate_accuracy(qat_model, data.val)
        with _watched(features, qat_model):  # the same layer names in the fake-quantized copy
            qat = fit(qat_model, data.train, data.val, kd_loss, epochs=settings.qat_epochs, lr=settings.qat_lr,
                      batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
                      weight_decay=settings.weight_decay, desc="distill int8 (QAT)", extra_modules=extra)
        quantizer.save_int8(qat_model, out_dir / INT8_CHECKPOINT)
        metrics.update({"int8_val_accuracy": qat.best_val_accuracy, "int8_epochs": qat.epochs_run,
                        "int8_history": qat.history, "quantizer": ctx.target.quantizer})
    if features is not None:
        features.close()
    return metrics


def make_feature_distiller(settings: Any, student: torch.nn.Module, teacher: torch.nn.Module,
                           data: Any) -> FeatureDistiller | None:
    """The recipe's feature-KD term, its layers checked against both models; None when off."""
    if settings.feature_loss is None:
        return None
    example = data.train.x[:2]
    pairs = choose_layer_pairs(settings.feature_loss, student, teacher, settings.feature_layers,
                               settings.teacher_layers, example)
    return FeatureDistiller(settings.feature_loss, pairs, student, teacher, example,
                            weight=settings.feature_weight, train_x=data.train.x,
                            train_y=data.train.y, num_classes=data.num_classes)


def _watched(features: FeatureDistiller | None, model: torch.nn.Module):
    return features.watch(model) if features is not None else contextlib.nullcontext()


def summary(metrics: dict[str, Any]) -> str:
    text = f"{metrics['arch']}: fp32 val accuracy {metrics['fp32_val_accuracy']:.4f}"
    if "int8_val_accuracy" in metrics:
        text += f", int8 val accuracy {metrics['int8_val_accuracy']:.4f}"
    return text + f" (teacher {metrics['teacher_val_accuracy']:.4f})"
