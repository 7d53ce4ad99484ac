"""Train the chosen student from the teacher: the recipe's KD loss (distill.loss) in fp32, then,
when the target deploys INT8, quantization-aware training with the target's own quantizer and the
same KD loss.

Teacher logits are computed once (no augmentation, so they never change) and looked up by
sample index, so the teacher does not run in every step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from edgekd.kd import make_kd_loss
from edgekd.models import build_model
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.training import evaluate_accuracy, fit, predict_logits

log = logging.getLogger(__name__)

FP32_CHECKPOINT = "student_fp32.pt"
INT8_CHECKPOINT = "student_int8.pt"


def run(ctx: RunContext) -> dict[str, Any]:
    settings = ctx.recipe.distill
    objective = make_kd_loss(settings.loss, settings)  # an unknown name fails before any work
    data = ctx.data
    arch = ctx.result("search")["chosen_arch"]
    out_dir = ctx.stage_dir("distill")
    teacher_logits = predict_logits(ctx.teacher.model, data.train.x)

    def kd_loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return objective(logits, teacher_logits[index], labels)

    torch.manual_seed(ctx.spec.seed)
    student = build_model(arch, data.input_shape[0], data.num_classes)
    fp32 = fit(student, data.train, data.val, kd_loss, epochs=settings.epochs, lr=settings.lr,
               batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
               weight_decay=settings.weight_decay, desc="distill fp32")
    torch.save(student.state_dict(), out_dir / FP32_CHECKPOINT)
    metrics: dict[str, Any] = {
        "arch": arch["name"], "teacher_val_accuracy": ctx.teacher.val_accuracy,
        "fp32_val_accuracy": fp32.best_val_accuracy, "fp32_epochs": fp32.epochs_run,
        "fp32_history": fp32.history,
    }
    if ctx.target.precision == "int8":
        quantizer = get_quantizer(ctx.target.quantizer)
        calibration = data.train.x[: settings.calibration_samples]
        qat_model = quantizer.prepare_int8(student, calibration)  # a copy: student stays fp32
        metrics["int8_ptq_val_accuracy"] = evaluate_accuracy(qat_model, data.val)
        qat = fit(qat_model, data.train, data.val, kd_loss, epochs=settings.qat_epochs, lr=settings.qat_lr,
                  batch_size=settings.batch_size, patience=settings.patience, seed=ctx.spec.seed,
                  weight_decay=settings.weight_decay, desc="distill int8 (QAT)")
        quantizer.save_int8(qat_model, out_dir / INT8_CHECKPOINT)
        metrics.update({"int8_val_accuracy": qat.best_val_accuracy, "int8_epochs": qat.epochs_run,
                        "int8_history": qat.history, "quantizer": ctx.target.quantizer})
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    text = f"{metrics['arch']}: fp32 val accuracy {metrics['fp32_val_accuracy']:.4f}"
    if "int8_val_accuracy" in metrics:
        text += f", int8 val accuracy {metrics['int8_val_accuracy']:.4f}"
    return text + f" (teacher {metrics['teacher_val_accuracy']:.4f})"
